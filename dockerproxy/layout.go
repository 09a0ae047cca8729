package dockerproxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// hostLayout is how the engine behind the proxy reads a create body
// without a HostConfig: Layout's answer when set, else the engine's own,
// asked when an edit needs it.
func (p *Proxy) hostLayout(ctx context.Context) HostLayout {
	return func() (bool, error) {
		if p.Layout != nil {
			return p.Layout(ctx)
		}
		v, err := p.engineAPIVersion(ctx)
		if err != nil {
			return false, err
		}
		return readsHostAtTop(v)
	}
}

// readsHostAtTop reports whether an engine of API version v reads the
// host's settings at the top level of a create body without a
// HostConfig: dockerd did (its request type embedded HostConfig) until
// API 1.46 (dockerd 27.0, moby#48007).
func readsHostAtTop(v string) (bool, error) {
	major, minor, ok := strings.Cut(v, ".")
	ma, err1 := strconv.Atoi(major)
	mi, err2 := strconv.Atoi(minor)
	if !ok || err1 != nil || err2 != nil || ma < 0 || mi < 0 {
		return false, fmt.Errorf("the engine's API version %q cannot be read", v)
	}
	return ma < 1 || ma == 1 && mi < 46, nil
}

// engineAPIVersion asks the engine which API version it speaks (GET
// /_ping's Api-Version), over a connection of its own: for the client
// whose request needs it, so it wakes a stopped engine as that request
// would.
func (p *Proxy) engineAPIVersion(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, p.dialTimeout()+10*time.Second)
	defer cancel()
	conn, err := p.Dial(ctx)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		conn.SetDeadline(deadline)
	}
	if _, err := io.WriteString(conn, "GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n"); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: http.MethodGet})
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	v := resp.Header.Get("Api-Version")
	if v == "" {
		return "", fmt.Errorf("GET /_ping: %s, no Api-Version", resp.Status)
	}
	return v, nil
}
