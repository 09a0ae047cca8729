package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ddinit/ddinit/atomicfile"
	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/transport"
	"github.com/sirupsen/logrus"
)

// DefaultControl is where `ddinit run` serves the control API in the distro.
const DefaultControl = "unix:///run/ddinit/control.sock"

// controlFlag adds --control (default: $DDINIT_CONTROL, then the distro's
// socket) to a command's flags.
func controlFlag(fs *flags) *string {
	def := os.Getenv("DDINIT_CONTROL")
	if def == "" {
		def = DefaultControl
	}
	return fs.String("control", def, "control API address")
}

func dial(addr string, timeout time.Duration) (*control.Client, error) {
	c, err := control.NewClient(addr, timeout)
	if err != nil {
		return nil, usagef("--control: %v", err)
	}
	return c, nil
}

// notRunning rewords a refused connection into what a person should do.
func notRunning(c *control.Client, err error) error {
	if errorsIsConnRefused(err) {
		return fmt.Errorf("ddinit is not running (nothing answers on %s): start it with `ddinit run`, or see its log in the data store's log/ddinit.log", c.Addr)
	}
	return err
}

// request dials the control API at addr and sends one request; a refused
// connection is reworded into what a person should do.
func request(ctx context.Context, addr string, timeout time.Duration, method, path string, stream bool) (*control.Client, *http.Response, error) {
	c, err := dial(addr, timeout)
	if err != nil {
		return nil, nil, err
	}
	resp, err := c.Do(ctx, method, path, stream)
	if err != nil {
		return c, nil, notRunning(c, err)
	}
	return c, resp, nil
}

// fetchStatus asks the control API at addr for GET /status.
func fetchStatus(addr string) (control.Status, error) {
	c, err := dial(addr, 10*time.Second)
	if err != nil {
		return control.Status{}, err
	}
	st, err := c.Status(context.Background())
	if err != nil {
		return st, notRunning(c, err)
	}
	return st, nil
}

func errorsIsConnRefused(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT)
}

func runLogs(env *Env, fs *flags) func() error {
	controlAddr := controlFlag(fs)
	follow := fs.Bool("f", false, "follow: keep printing new lines")
	n := fs.Int("n", 100, "how many past lines (0: all kept)")
	return func() error { return showLogs(env, fs, *controlAddr, *follow, *n) }
}

func showLogs(env *Env, fs *flags, controlAddr string, follow bool, n int) error {
	if fs.NArg() > 1 {
		return fs.argCount("at most one SERVICE")
	}
	q := url.Values{"service": {fs.Arg(0)}, "tail": {strconv.Itoa(n)}}
	if follow {
		q.Set("follow", "1")
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	err := copyAnswer(ctx, env.Stdout, controlAddr, "/logs?"+q.Encode(), follow)
	if ctx.Err() != nil {
		return nil // interrupted while following: done
	}
	return err
}

// copyAnswer writes what the control API answers to GET path to w.
func copyAnswer(ctx context.Context, w io.Writer, addr, path string, stream bool) error {
	_, resp, err := request(ctx, addr, 10*time.Second, http.MethodGet, path, stream)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return control.ResponseError(resp)
	}
	_, err = io.Copy(w, resp.Body)
	return err
}

func runRestart(env *Env, fs *flags) func() error {
	controlAddr := controlFlag(fs)
	return func() error { return restart(env, fs, *controlAddr) }
}

func restart(env *Env, fs *flags, controlAddr string) error {
	if fs.NArg() != 1 {
		return fs.argCount("name one SERVICE")
	}
	_, resp, err := request(context.Background(), controlAddr, 10*time.Second, http.MethodPost, "/services/"+url.PathEscape(fs.Arg(0))+"/restart", false)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("restart %s: %w", fs.Arg(0), control.ResponseError(resp))
	}
	fmt.Fprintf(env.Stdout, "restarting %s\n", fs.Arg(0))
	return nil
}

func runStop(env *Env, fs *flags) func() error {
	controlAddr := controlFlag(fs)
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait for the shutdown")
	return func() error {
		if fs.NArg() > 0 {
			return fs.argCount("takes no arguments")
		}
		return stop(env, *controlAddr, *timeout)
	}
}

func stop(env *Env, controlAddr string, timeout time.Duration) error {
	c, resp, err := request(context.Background(), controlAddr, 10*time.Second, http.MethodPost, "/shutdown", false)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return control.ResponseError(resp)
	}
	fmt.Fprintln(env.Stdout, "stopping ddinit")
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if _, err := c.Status(context.Background()); err != nil {
			fmt.Fprintln(env.Stdout, "stopped")
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("ddinit still answers after %s", timeout)
}

func runDiagnose(env *Env, fs *flags) func() error {
	controlAddr := controlFlag(fs)
	out := fs.String("o", "", "where to write the archive (default ddinit-diagnostics-TIME.tar.gz)")
	return func() error {
		if fs.NArg() > 0 {
			return usagef("takes no arguments (got %q): -o FILE names the archive", fs.Args())
		}
		return diagnose(env, *controlAddr, *out)
	}
}

func diagnose(env *Env, controlAddr, path string) error {
	if path == "" {
		path = fmt.Sprintf("ddinit-diagnostics-%s.tar.gz", time.Now().UTC().Format("20060102-150405"))
	}
	_, resp, err := request(context.Background(), controlAddr, 2*time.Minute, http.MethodGet, "/diagnostics", false)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return control.ResponseError(resp)
	}
	body := &countingReader{r: resp.Body}
	if err := atomicfile.WriteFrom(path, body, 0o644); err != nil {
		return fmt.Errorf("diagnostics: %w", err)
	}
	fmt.Fprintf(env.Stdout, "wrote %s (%d bytes): status, logs (credentials redacted), mounts, processes, network, kernel log\n", path, body.n)
	return nil
}

// countingReader counts what it reads.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func runProbe(env *Env, fs *flags) func() error {
	timeout := fs.Duration("timeout", 5*time.Second, "give up after this long")
	return func() error {
		if fs.NArg() != 1 {
			return fs.argCount("name one ADDR")
		}
		return probe(env, fs.Arg(0), *timeout)
	}
}

func probe(env *Env, addr string, timeout time.Duration) error {
	c, err := dial(addr, timeout)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	resp, err := c.Do(ctx, http.MethodGet, "/ping", false)
	if err != nil {
		return fmt.Errorf("unhealthy: %w", err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if st, err := c.Status(ctx); err == nil {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(st)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("unhealthy: %s", strings.TrimSpace(string(body)))
	}
	return nil
}

func runForward(env *Env, fs *flags) func() error {
	listen := fs.String("listen", "", "where to accept connections")
	to := fs.String("to", "", "where to carry them")
	allowLocal := fs.Bool("vsock-allow-local", false, "admit vsock peers from CID 1 (tests)")
	return func() error {
		switch {
		case fs.NArg() > 0:
			return fs.argCount("takes no arguments")
		case *listen == "" || *to == "":
			return usagef("both --listen ADDR and --to ADDR are needed")
		}
		return forward(env, *listen, *to, *allowLocal)
	}
}

func forward(env *Env, listen, to string, allowLocal bool) error {
	la, err := transport.Parse(listen)
	if err != nil {
		return usagef("--listen: %v", err)
	}
	ta, err := transport.Parse(to)
	if err != nil {
		return usagef("--to: %v", err)
	}
	log := logrus.New()
	log.SetOutput(env.Stderr)
	entry := log.WithFields(logrus.Fields{"listen": la.String(), "to": ta.String()})
	l, err := transport.Listen(la)
	if err != nil {
		return err
	}
	f := &transport.Forwarder{
		Listener: transport.Filter(l, la, transport.PeerPolicy{AllowLocal: allowLocal}, entry),
		Dial:     func(ctx context.Context) (net.Conn, error) { return transport.DialContext(ctx, ta) },
		Log:      entry,
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	go func() { <-ctx.Done(); l.Close() }()
	entry.Info("forwarding")
	return f.Serve(ctx)
}
