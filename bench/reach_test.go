package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ddinit/ddinit/e2e/harness"
	"github.com/ddinit/ddinit/network"
	"github.com/vishvananda/netns"
)

// TestBenchHostPorts is `make bench` for the host-network listeners'
// forwarding: how long after a host-network container's server answers
// inside the engine's namespace it answers on the distro's loopback (both
// sides polled by this test on one clock, every millisecond), and what
// ddinit run's CPU is over a quiet minute with 200 host-network containers
// each listening, with the forwarding on against the same state with it
// off (the setting), in alternating rounds.
func TestBenchHostPorts(t *testing.T) {
	requireBench(t)
	harness.RequireEnvironment(t)
	in := harness.Start(t, harness.Options{Extra: asDeployed})
	in.WaitPing(60 * time.Second)
	in.ImportBusybox()
	ns, err := netns.GetFromPath(fmt.Sprintf("/proc/%d/ns/net", in.Pid1()))
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	in.Docker("run", "-d", "--name", "lat", "--network", "host", "busybox:local", "sh", "-c", "mkdir /www && echo up > /www/index.html && exec sleep 3600")
	var lat []time.Duration
	for round := range 11 {
		port := strconv.Itoa(21000 + round)
		in.Docker("exec", "-d", "lat", "httpd", "-f", "-p", "127.0.0.1:"+port, "-h", "/www")
		inside, distro := firstConnect(t, ns, "127.0.0.1:"+port)
		if round > 0 { // the first warms both paths
			lat = append(lat, distro.Sub(inside))
		}
	}
	t.Logf("BENCH host-network listener up inside → answering on the distro's loopback: median %s (min %s, max %s, 10 rounds; target <= 100 ms)",
		median(lat).Round(100*time.Microsecond), slices.Min(lat).Round(100*time.Microsecond), slices.Max(lat).Round(100*time.Microsecond))
	in.Docker("rm", "-f", "lat")

	// 200 host-network containers, each with a server.
	var wg sync.WaitGroup
	sem := make(chan struct{}, 6)
	for i := range 200 {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			name := fmt.Sprintf("idle%03d", i)
			if out, err := in.DockerErr("run", "-d", "--name", name, "--network", "host", "busybox:local",
				"sh", "-c", fmt.Sprintf("mkdir /www && exec httpd -f -p 127.0.0.1:%d -h /www", 22000+i)); err != nil {
				t.Errorf("docker run %s: %v %s", name, err, out)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	harness.WaitUntil(t, time.Minute, "the 200 servers forwarded", func() bool {
		c, err := net.DialTimeout("tcp", "127.0.0.1:22199", 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	run := in.Pid()
	cpu := map[bool][]time.Duration{}
	gen := 0
	for range 3 {
		for _, on := range []bool{true, false} {
			if code, body := in.PutSettings(fmt.Sprintf(`{"generation": %d, "hostNetworkPorts": %v}`, gen, on)); code != 200 {
				t.Fatalf("hostNetworkPorts %v: %d %s", on, code, body)
			}
			gen++
			time.Sleep(2 * time.Second) // the switch's own work done
			before := cpuTime(t, run)
			time.Sleep(20 * time.Second)
			cpu[on] = append(cpu[on], cpuTime(t, run)-before)
		}
	}
	pct := func(d time.Duration) float64 { return 100 * float64(d) / float64(20*time.Second) }
	on, off := median(cpu[true]), median(cpu[false])
	t.Logf("BENCH ddinit run's CPU with 200 host-network containers listening, median of 3 x 20 s: forwarding on %.2f%% of a core, off %.2f%% (the watcher: %+.2f%%; target <= 1%%)",
		pct(on), pct(off), pct(on)-pct(off))
}

// firstConnect polls addr inside the namespace ns and on the distro's
// loopback, each every millisecond, and returns when each first
// accepted a connection.
func firstConnect(t *testing.T, ns netns.NsHandle, addr string) (inside, distro time.Time) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var wg sync.WaitGroup
	poll := func(at *time.Time, dial func() (net.Conn, error)) {
		defer wg.Done()
		for time.Now().Before(deadline) {
			if c, err := dial(); err == nil {
				*at = time.Now()
				c.Close()
				return
			}
			time.Sleep(time.Millisecond)
		}
	}
	wg.Add(2)
	go poll(&inside, func() (net.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return network.DialIn(ctx, ns, "tcp", addr)
	})
	go poll(&distro, func() (net.Conn, error) { return net.DialTimeout("tcp", addr, time.Second) })
	wg.Wait()
	if inside.IsZero() || distro.IsZero() {
		t.Fatalf("%s: up inside at %v, in the distro at %v", addr, inside, distro)
	}
	return inside, distro
}

// cpuTime is a process's user and system time so far.
func cpuTime(t *testing.T, pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.Atoi(f[11])
	stime, _ := strconv.Atoi(f[12])
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}
