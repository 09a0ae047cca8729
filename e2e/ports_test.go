package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ddinit/ddinit/e2e/harness"
)

// get fetches http://addr/ and returns the body, or the error.
func httpGet(addr string) (string, error) {
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Get("http://" + addr + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// answers waits until http://addr/ serves want.
func answers(t *testing.T, addr, want string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var last string
	for time.Since(start) < within {
		body, err := httpGet(addr)
		if err == nil && strings.Contains(body, want) {
			return time.Since(start)
		}
		last = fmt.Sprint(body, err)
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s did not serve %q within %s (last: %s)", addr, want, within, last)
	return 0
}

// refused reports that nothing answers on addr.
func refused(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		c.Close()
		return false
	}
	return true
}

// distroAddress is an address of this machine (the test's distro) that is
// not loopback: where a 127.0.0.1 binding must not answer.
func distroAddress(t *testing.T) string {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if ip, ok := a.(*net.IPNet); ok && ip.IP.To4() != nil && !ip.IP.IsLoopback() {
			return ip.IP.String()
		}
	}
	t.Skip("the machine has no IPv4 address but loopback: nothing to check a loopback binding against")
	return ""
}

// Every form of -p answers in the distro on the address it names, and
// nowhere it should not; after dockerd restarts for a settings change, the
// containers answer again within 2 s.
func TestPublishedPortForms(t *testing.T) {
	harness.RequireEnvironment(t)
	in := harness.Start(t, harness.Options{})
	in.WaitPing(60 * time.Second)
	in.ImportBusybox()
	other := distroAddress(t)
	web := func(name string, flags ...string) {
		args := append([]string{"run", "-d", "--name", name}, flags...)
		args = append(args, "busybox:local", "sh", "-c", "mkdir /www && echo page-"+name+" > /www/index.html && httpd -p 81 -h /www && exec httpd -f -p 80 -h /www")
		in.Docker(args...)
	}

	web("loopback", "-p", "127.0.0.1:18181:80")
	answers(t, "127.0.0.1:18181", "page-loopback", 20*time.Second)
	if !refused(net.JoinHostPort(other, "18181")) {
		t.Fatalf("a 127.0.0.1 binding answers on %s", other)
	}

	web("ranged", "-p", "18182-18183:80-81")
	answers(t, "127.0.0.1:18182", "page-ranged", 20*time.Second)
	answers(t, net.JoinHostPort(other, "18183"), "page-ranged", 20*time.Second)

	web("random", "--expose", "80", "-P")
	answers(t, "127.0.0.1:"+in.Port("random", "80/tcp"), "page-random", 20*time.Second)

	web("loopbackrandom", "-p", "127.0.0.1::80")
	p := in.Port("loopbackrandom", "80/tcp")
	answers(t, "127.0.0.1:"+p, "page-loopbackrandom", 20*time.Second)
	if !refused(net.JoinHostPort(other, p)) {
		t.Fatalf("a 127.0.0.1:: binding answers on %s", other)
	}

	// UDP, with a server built here (busybox's nc has none).
	echo := buildUDPEcho(t)
	in.Docker("create", "--name", "udp", "-p", "127.0.0.1:18184:9999/udp", "busybox:local", "/udpecho", "9999")
	in.Docker("cp", echo, "udp:/udpecho")
	in.Docker("start", "udp")
	var reply string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline) && reply == ""; {
		c, err := net.Dial("udp", "127.0.0.1:18184")
		if err == nil {
			c.SetDeadline(time.Now().Add(300 * time.Millisecond))
			c.Write([]byte("hello"))
			b := make([]byte, 64)
			if n, err := c.Read(b); err == nil {
				reply = string(b[:n])
			}
			c.Close()
		}
	}
	if reply != "echo: hello" {
		t.Fatalf("a UDP binding answered %q", reply)
	}

	ipv6 := false
	if l, err := net.Listen("tcp", "[::1]:0"); err == nil {
		l.Close()
		ipv6 = true
		web("loopback6", "-p", "[::1]:18185:80")
		answers(t, "[::1]:18185", "page-loopback6", 20*time.Second)
		if !refused("127.0.0.1:18185") {
			t.Fatal("a [::1] binding answers on 127.0.0.1")
		}
	} else {
		t.Logf("the machine has no IPv6 loopback (%v): -p [::1]:P:80 is not tested here", err)
	}

	// dockerd restarts for a settings change (live-restore keeps the
	// containers): every binding answers again within 2 s.
	if code, body := in.PutSettings(`{"generation": 0, "daemonJSON": {"labels": ["ports=1"]}}`); code != 200 {
		t.Fatalf("the settings change: %d %s", code, body)
	}
	took := answers(t, "127.0.0.1:18181", "page-loopback", 2*time.Second)
	answers(t, "127.0.0.1:18182", "page-ranged", 2*time.Second)
	if ipv6 {
		answers(t, "[::1]:18185", "page-loopback6", 2*time.Second)
	}
	t.Logf("after dockerd restarted, the ports answered again %s after the change was applied", took.Round(time.Millisecond))
}
