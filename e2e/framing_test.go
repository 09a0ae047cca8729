package e2e

import (
	"archive/tar"
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ddinit/ddinit/e2e/harness"
)

// curlTo sends one request with curl over a unix socket and returns the
// status, the body and how long it took.
func curlTo(t *testing.T, sock, method, path, contentType, bodyFile string, extra ...string) (string, string, time.Duration) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "answer")
	args := append([]string{"-s", "-m", "60", "-o", out, "-w", "%{http_code}", "--unix-socket", sock, "-X", method, "-H", "Content-Type: " + contentType}, extra...)
	if bodyFile != "" {
		args = append(args, "--data-binary", "@"+bodyFile)
	}
	args = append(args, "http://docker"+path)
	start := time.Now()
	code, err := exec.Command("curl", args...).Output()
	took := time.Since(start)
	if err != nil {
		t.Fatalf("curl %s %s: %v", method, path, err)
	}
	b, _ := os.ReadFile(out)
	return string(code), string(b), took
}

// tarWith writes a tar of the given files.
func tarWith(t *testing.T, path string, files map[string][]byte) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	for name, b := range files {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b))})
		tw.Write(b)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
}

// What real clients send, through the exposed socket and a distro's
// proxy, is answered as dockerd answers it straight: a 2 MB create sent
// with Expect: 100-continue (curl does for bodies over 1 MB), a 20 MB
// archive upload, a build with a 20 MB context, a 20 MB upload dockerd
// refuses at once, a chunked create and a ping on one connection.
func TestProxyFramesAsTheEngine(t *testing.T) {
	harness.RequireEnvironment(t)
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl is missing (make deps installs it)")
	}
	w := newWSLWorld(t)
	distro := newUserDistro(t, "Ubuntu")
	distro.startProxy(w.shared)
	direct := fmt.Sprintf("/proc/%d/root/run/docker.sock", w.in.Pid1())
	sockets := map[string]string{"the exposed socket": w.in.Sock, "a distro's proxy": fmt.Sprintf("/proc/%d/root/run/docker.sock", distro.pid)}

	dir := t.TempDir()
	create := filepath.Join(dir, "create.json")
	os.WriteFile(create, []byte(`{"Image":"busybox:local","Cmd":["true"],"Labels":{"pad":"`+strings.Repeat("x", 2<<20)+`"}}`), 0o644)
	big := bytes.Repeat([]byte("0123456789abcdef"), 20<<20/16)
	archive := filepath.Join(dir, "archive.tar")
	tarWith(t, archive, map[string][]byte{"big": big})
	context := filepath.Join(dir, "context.tar")
	tarWith(t, context, map[string][]byte{"Dockerfile": []byte("FROM busybox:local\nCOPY big /big\n"), "big": big})
	w.in.Docker("create", "--name", "target", "busybox:local", "true")

	// Straight to dockerd, for what to expect.
	_, directArchive, directTook := curlTo(t, direct, "PUT", "/containers/target/archive?path=/", "application/x-tar", archive)
	directBuild, _, _ := curlTo(t, direct, "POST", "/build?t=framing:direct", "application/x-tar", context)
	for name, sock := range sockets {
		t.Run(name, func(t *testing.T) {
			if code, body, _ := curlTo(t, sock, "POST", "/containers/create", "application/json", create, "-H", "Expect: 100-continue"); code != "201" {
				t.Fatalf("a 2 MB create with Expect: 100-continue: %s %.200s", code, body)
			}
			code, body, took := curlTo(t, sock, "PUT", "/containers/target/archive?path=/", "application/x-tar", archive)
			t.Logf("20 MB archive: %s in %s (straight: %s)", code, took.Round(time.Millisecond), directTook.Round(time.Millisecond))
			if code != "200" || body != directArchive || took > directTook+time.Second {
				t.Fatalf("a 20 MB archive: %s %q in %s; straight: %q in %s", code, body, took, directArchive, directTook)
			}
			if code, _, _ := curlTo(t, sock, "POST", "/build?t=framing:proxied", "application/x-tar", context); code != directBuild {
				t.Fatalf("a build with a 20 MB context: %s, straight %s", code, directBuild)
			}
			code, body, _ = curlTo(t, sock, "PUT", "/containers/nosuch/archive?path=/", "application/x-tar", archive)
			if code != "404" || !strings.Contains(body, "No such container") {
				t.Fatalf("a 20 MB upload for no container: %s %q", code, body)
			}

			c, err := net.Dial("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			doc := `{"Image":"busybox:local","Cmd":["true"]}`
			fmt.Fprintf(c, "POST /containers/create HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\nGET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n", len(doc), doc)
			br := bufio.NewReader(c)
			for _, want := range []int{201, 200} {
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("a chunked create then a ping on one connection: the %d did not come: %v", want, err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != want {
					t.Fatalf("a chunked create then a ping: %d, want %d", resp.StatusCode, want)
				}
			}
		})
	}
}
