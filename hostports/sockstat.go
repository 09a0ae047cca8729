package hostports

import (
	"bytes"
	"fmt"
	"time"

	"github.com/ddinit/ddinit/network"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// fullEvery is the longest the sockets go unread while the counts stay
// the same: a listener that closed and another that opened between two
// polls leave the counts as they were.
const fullEvery = time.Second

// sockCounts reads how many TCP and UDP sockets of each family are in
// use in a namespace (its /proc/net/sockstat and sockstat6, opened there
// once): a listen, a bind, a close changes them. One read of each is a
// small part of a dump's cost, which walks the kernel's socket tables.
type sockCounts struct {
	files [2]int
	buf   []byte
}

func openSockCounts(ns netns.NsHandle) (*sockCounts, error) {
	c := &sockCounts{files: [2]int{-1, -1}, buf: make([]byte, 1024)}
	var err error
	if nerr := network.InNamespace(ns, func() {
		for i, name := range []string{"sockstat", "sockstat6"} {
			// thread-self: this thread's, which is in the namespace; the
			// file keeps the namespace it was opened in.
			if c.files[i], err = unix.Open("/proc/thread-self/net/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
				if name == "sockstat6" && err == unix.ENOENT {
					// A kernel without IPv6: no IPv6 sockets to count.
					c.files[i], err = -1, nil
					continue
				}
				err = fmt.Errorf("the engine's namespace's %s: %w", name, err)
				return
			}
		}
	}); nerr != nil {
		err = nerr
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (c *sockCounts) Close() error {
	for _, fd := range c.files {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
	return nil
}

// read appends the in-use counts of TCP and UDP, IPv4 then IPv6, to
// out: the other figures (memory, which is the machine's) change with
// any traffic.
func (c *sockCounts) read(out []byte) ([]byte, error) {
	for _, fd := range c.files {
		if fd < 0 {
			continue
		}
		n, err := unix.Pread(fd, c.buf, 0)
		if err != nil {
			return out, fmt.Errorf("socket counts: %w", err)
		}
		out = inUse(c.buf[:n], out)
	}
	return out, nil
}

// inUse appends the "inuse N" of sockstat's TCP and UDP lines (TCP6 and
// UDP6 in sockstat6) to out, each with its line's name.
func inUse(stat, out []byte) []byte {
	for line := range bytes.Lines(stat) {
		name, rest, ok := bytes.Cut(line, []byte(": "))
		if !ok {
			continue
		}
		switch string(name) {
		case "TCP", "UDP", "TCP6", "UDP6":
		default:
			continue
		}
		if f := bytes.Fields(rest); len(f) >= 2 && string(f[0]) == "inuse" {
			out = append(append(append(out, name...), ' '), f[1]...)
			out = append(out, '\n')
		}
	}
	return out
}
