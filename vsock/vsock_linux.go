package vsock

import (
	"fmt"
	"net"
	"time"
)

// AF_VSOCK support arrives with the control API; until then a vsock address
// parses but cannot be used.
func listenVsock(a Addr) (net.Listener, error) {
	return nil, fmt.Errorf("listen %s: vsock transport not built in yet", a)
}

func dialVsock(a Addr, timeout time.Duration) (net.Conn, error) {
	return nil, fmt.Errorf("dial %s: vsock transport not built in yet", a)
}
