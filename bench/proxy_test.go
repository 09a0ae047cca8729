package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ddinit/ddinit/dockerproxy"
	"github.com/ddinit/ddinit/e2e/harness"
	"github.com/ddinit/ddinit/transport"
	"github.com/sirupsen/logrus"
)

// TestBenchProxy is `make bench` for the docker API proxy: the exposed
// docker socket (the proxy, in ddinit run) against a plain byte forwarder
// on the same hop (a unix socket to dockerd's, through /proc/PID/root),
// measured in the same run, as ratios.
func TestBenchProxy(t *testing.T) {
	requireBench(t)
	harness.RequireEnvironment(t)
	in := harness.Start(t, harness.Options{Extra: asDeployed})
	in.WaitPing(60 * time.Second)
	in.ImportBusybox()
	plain := filepath.Join(in.RunDir, "plain.sock")
	l, err := net.Listen("unix", plain)
	if err != nil {
		t.Fatal(err)
	}
	target := fmt.Sprintf("/proc/%d/root/run/docker.sock", in.Pid1())
	quiet := logrus.New()
	quiet.Out = io.Discard
	f := &transport.Forwarder{Listener: l, Log: quiet, Dial: func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", target)
	}}
	go f.Serve(context.Background())
	defer l.Close()
	// The same proxy ddinit puts on the exposed sockets, in this process
	// like the plain forwarder, so that the two differ only in what they do.
	proxied := filepath.Join(in.RunDir, "proxied.sock")
	pl, err := net.Listen("unix", proxied)
	if err != nil {
		t.Fatal(err)
	}
	defer pl.Close()
	p := &dockerproxy.Proxy{Dial: f.Dial, Translate: dockerproxy.WindowsPaths{Inside: "/run/desktop/mnt/host"}.Translate, Log: quiet}
	go p.Serve(pl)
	sockets := map[string]string{"proxy": proxied, "plain": plain, "ddinit's": in.Sock}

	// _ping latency on one keep-alive connection.
	latency := map[string]time.Duration{}
	for _, name := range []string{"proxy", "plain", "ddinit's", "proxy", "plain", "ddinit's"} {
		c, err := net.Dial("unix", sockets[name])
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		var d []time.Duration
		for range 5000 {
			start := time.Now()
			io.WriteString(c, "GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n")
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			d = append(d, time.Since(start))
		}
		c.Close()
		slices.Sort(d)
		if m := d[len(d)/2]; latency[name] == 0 || m < latency[name] {
			latency[name] = m
		}
	}

	// docker cp of 1 GB into a container and out again.
	src := filepath.Join(t.TempDir(), "big")
	if out, err := exec.Command("dd", "if=/dev/urandom", "of="+src, "bs=1M", "count=1024", "status=none").CombinedOutput(); err != nil {
		t.Fatalf("dd: %v %s", err, out)
	}
	in.Docker("run", "-d", "--name", "cpbench", "busybox:local", "sleep", "3600")
	// The copy is mostly dockerd's unpacking, which varies from copy to
	// copy: rounds taken in ABBA turns, the median of each side's and the
	// spread of the rounds' ratios printed, and the hop's own CPU (this
	// process: the proxy or the forwarder; the CLI is a child) per copy.
	copyTime, hopCPU := map[string][]time.Duration{}, map[string][]time.Duration{}
	for round := range 6 {
		order := []string{"proxy", "plain"}
		if round%2 == 1 {
			order = []string{"plain", "proxy"}
		}
		for _, name := range order {
			cmd := exec.Command("docker", "cp", src, "cpbench:/big")
			cmd.Env = append(os.Environ(), "DOCKER_HOST=unix://"+sockets[name])
			cpu, start := cpuTime(t, os.Getpid()), time.Now()
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("docker cp through %s: %v %s", name, err, out)
			}
			copyTime[name] = append(copyTime[name], time.Since(start))
			hopCPU[name] = append(hopCPU[name], cpuTime(t, os.Getpid())-cpu)
		}
	}

	// containers/create with three binds, then removed.
	dir := t.TempDir()
	create := map[string]time.Duration{}
	body := fmt.Sprintf(`{"Image":"busybox:local","Cmd":["true"],"HostConfig":{"Binds":["%[1]s/a:/a","%[1]s/b:/b:ro","%[1]s/c:/c"]}}`, dir)
	for _, name := range []string{"proxy", "plain", "proxy", "plain"} {
		client := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sockets[name])
		}}}
		var d []time.Duration
		for range 40 {
			start := time.Now()
			resp, err := client.Post("http://docker/v1.41/containers/create", "application/json", strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			d = append(d, time.Since(start))
			var created struct{ Id string }
			if json.Unmarshal(b, &created) != nil || created.Id == "" {
				t.Fatalf("create through %s: %s %s", name, resp.Status, b)
			}
			id := created.Id
			req, _ := http.NewRequest(http.MethodDelete, "http://docker/v1.41/containers/"+id, nil)
			if resp, err := client.Do(req); err == nil {
				resp.Body.Close()
			}
		}
		slices.Sort(d)
		if m := d[len(d)/2]; create[name] == 0 || m < create[name] {
			create[name] = m
		}
	}
	in.Docker("rm", "-f", "cpbench")
	t.Logf("BENCH docker API proxy, _ping latency on one connection: proxy median %v, plain forwarder %v, ratio %.2f (target <= 1.2); through ddinit's exposed socket %v",
		latency["proxy"], latency["plain"], float64(latency["proxy"])/float64(latency["plain"]), latency["ddinit's"])
	gb := func(d time.Duration) float64 { return 1 / d.Seconds() }
	t.Logf("BENCH docker API proxy, docker cp of 1 GB in, %d rounds: proxy %.2f GB/s, plain forwarder %.2f GB/s, ratio %.2f (rounds %s; target >= 0.95); the hop's CPU per GB: proxy %v, plain forwarder %v",
		len(copyTime["proxy"]), gb(median(copyTime["proxy"])), gb(median(copyTime["plain"])),
		float64(median(copyTime["plain"]))/float64(median(copyTime["proxy"])), ratioSpread(copyTime["plain"], copyTime["proxy"]),
		median(hopCPU["proxy"]), median(hopCPU["plain"]))
	t.Logf("BENCH docker API proxy, containers/create with three binds: proxy median %v, plain forwarder %v, added %v",
		create["proxy"].Round(time.Microsecond), create["plain"].Round(time.Microsecond), (create["proxy"] - create["plain"]).Round(time.Microsecond))
}
