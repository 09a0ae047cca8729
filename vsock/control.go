package vsock

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
)

// The control API: HTTP/1.1 on vsock and on a unix socket. Its types are
// shared by the server (PID 1) and the clients (the CLI, the frontend's
// probe).

// Status is GET /status.
type Status struct {
	Version    string          `json:"version"`
	State      string          `json:"state"` // booting, running, stopping, failed
	Ready      bool            `json:"ready"`
	Reason     string          `json:"reason,omitempty"`
	Started    time.Time       `json:"started"`
	Uptime     string          `json:"uptime"`
	HostPID    int             `json:"hostPid,omitempty"` // PID 1 as the distro sees it
	Phases     []Phase         `json:"bootPhases"`
	Services   []ServiceStatus `json:"services"`
	Containerd ServiceStatus   `json:"containerd"`
	Images     []Image         `json:"images"`
	Components []Component     `json:"components"`
	DataStore  DataStore       `json:"dataStore"`
	Drives     []Drive         `json:"drives"`
	// DistroBinds are the only places where the namespace reaches the
	// distro's file systems.
	DistroBinds []Bind        `json:"distroBinds"`
	Mounts      []string      `json:"mounts"`
	Network     *NetworkState `json:"network,omitempty"`
	Goroutines  int           `json:"goroutines"`
	Orphans     int64         `json:"orphansReaped"`
}

// NetworkState is the namespace's end of its link to the distro.
type NetworkState struct {
	Link      string   `json:"link"`
	Addresses []string `json:"addresses"`
	Gateways  []string `json:"gateways,omitempty"`
	Error     string   `json:"error,omitempty"`
}

// Phase is a boot step and its duration.
type Phase struct {
	Name       string  `json:"name"`
	DurationMs float64 `json:"durationMs"`
}

// ServiceStatus is one service.
type ServiceStatus struct {
	Name      string    `json:"name"`
	State     string    `json:"state"`
	Ready     bool      `json:"ready"`
	Required  bool      `json:"required"`
	PID       int       `json:"pid,omitempty"`
	Restarts  int       `json:"restarts"`
	Since     time.Time `json:"since"`
	Reason    string    `json:"reason,omitempty"`
	LastExit  *Exit     `json:"lastExit,omitempty"`
	NextStart time.Time `json:"nextStart,omitzero"`
}

// Exit is how a service's last run ended.
type Exit struct {
	Code   int       `json:"code"`
	Signal string    `json:"signal,omitempty"`
	Error  string    `json:"error,omitempty"`
	Cause  string    `json:"cause,omitempty"` // why ddinit killed it
	Time   time.Time `json:"time"`
	Ran    string    `json:"ran"`
	Output []string  `json:"output,omitempty"`
}

// Image is one boot image.
type Image struct {
	Name     string `json:"name"`
	Source   string `json:"source"`
	Digest   string `json:"digest"`
	CacheHit bool   `json:"cacheHit"`
	Kernel   bool   `json:"kernelMount"`
}

// Component is a line of the version pack's manifest.
type Component struct {
	Name    string `json:"name"`
	Package string `json:"package,omitempty"`
	Version string `json:"version"`
}

// DataStore is the data distro's root.
type DataStore struct {
	Dir       string `json:"dir"`
	FreeBytes uint64 `json:"freeBytes"`
	LowSpace  bool   `json:"lowSpace"`
}

// Drive is a Windows drive as the namespace sees it.
type Drive struct {
	Letter string `json:"letter"`
	Path   string `json:"path"`   // in the distro
	Inside string `json:"inside"` // in the namespace
	FSType string `json:"fsType"`
}

// Bind is a folder of the distro bound into the namespace.
type Bind struct {
	Source   string `json:"source"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"readOnly,omitempty"`
	Slave    bool   `json:"slave,omitempty"`
}

// LogLine is one line of GET /logs?format=json.
type LogLine struct {
	Time    time.Time `json:"time"`
	Service string    `json:"service"`
	Stream  string    `json:"stream"`
	Text    string    `json:"text"`
}

// ErrNotFound is returned by a Backend for an unknown service.
var ErrNotFound = errors.New("no such service")

// Backend is what the control API serves; PID 1 implements it.
type Backend interface {
	Status() Status
	// Health is what /ping needs of Status, cheap enough to poll: the
	// state, whether ready, and why not.
	Health() (state string, ready bool, reason string)
	// Logs returns the last tail lines (all kept when tail <= 0) and, when
	// follow, a channel of new ones and a function to stop following.
	Logs(service string, tail int, follow bool) ([]LogLine, <-chan LogLine, func(), error)
	Restart(service string) error
	Shutdown()
	Diagnostics(w io.Writer) error
}

// ControlServer serves the control API for a Backend.
type ControlServer struct {
	Backend Backend
	Log     logrus.FieldLogger
	http    *http.Server
}

// Handler returns the API's routes.
func (s *ControlServer) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ping", s.ping)
	mux.HandleFunc("GET /status", s.status)
	mux.HandleFunc("GET /version", s.version)
	mux.HandleFunc("GET /logs", s.logs)
	mux.HandleFunc("POST /services/{name}/restart", s.restart)
	mux.HandleFunc("POST /shutdown", s.shutdown)
	mux.HandleFunc("GET /diagnostics", s.diagnostics)
	return mux
}

// Serve serves on every listener until Close.
func (s *ControlServer) Serve(ls ...net.Listener) {
	s.http = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    64 << 10, // a 1 MB header gets 431, not memory
		ErrorLog:          nil,
	}
	for _, l := range ls {
		go s.http.Serve(l)
	}
}

// Close stops serving; requests in flight get a moment to finish.
func (s *ControlServer) Close() {
	if s.http == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s.http.Shutdown(ctx)
	s.http.Close()
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func (s *ControlServer) ping(w http.ResponseWriter, r *http.Request) {
	state, ready, reason := s.Backend.Health()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if ready {
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "OK\n")
		return
	}
	w.WriteHeader(http.StatusServiceUnavailable)
	fmt.Fprintf(w, "%s: %s\n", state, reason)
}

func (s *ControlServer) status(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.Backend.Status())
}

func (s *ControlServer) version(w http.ResponseWriter, r *http.Request) {
	st := s.Backend.Status()
	writeJSON(w, http.StatusOK, map[string]any{"version": st.Version, "components": st.Components})
}

func (s *ControlServer) logs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	tail := 100
	if v := q.Get("tail"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			http.Error(w, "tail: want a number of lines", http.StatusBadRequest)
			return
		}
		tail = n
	}
	follow := q.Get("follow") == "1" || q.Get("follow") == "true"
	lines, ch, stop, err := s.Backend.Logs(q.Get("service"), tail, follow)
	if errors.Is(err, ErrNotFound) {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if stop != nil {
		defer stop()
	}
	asJSON := q.Get("format") == "json"
	if asJSON {
		w.Header().Set("Content-Type", "application/x-ndjson")
	} else {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	}
	bw := bufio.NewWriter(w)
	write := func(l LogLine) {
		if asJSON {
			b, _ := json.Marshal(l)
			bw.Write(append(b, '\n'))
			return
		}
		fmt.Fprintf(bw, "%s %s %s %s\n", l.Time.UTC().Format(time.RFC3339Nano), l.Service, l.Stream, l.Text)
	}
	for _, l := range lines {
		write(l)
	}
	bw.Flush()
	if ch == nil {
		return
	}
	flusher, _ := w.(http.Flusher)
	if flusher != nil {
		flusher.Flush()
	}
	for {
		select {
		case l, ok := <-ch:
			if !ok {
				return
			}
			write(l)
			bw.Flush()
			if flusher != nil {
				flusher.Flush()
			}
		case <-r.Context().Done():
			return
		}
	}
}

func (s *ControlServer) restart(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	err := s.Backend.Restart(name)
	switch {
	case errors.Is(err, ErrNotFound):
		http.Error(w, err.Error(), http.StatusNotFound)
	case err != nil:
		http.Error(w, err.Error(), http.StatusConflict)
	default:
		writeJSON(w, http.StatusAccepted, map[string]string{"restarting": name})
	}
}

func (s *ControlServer) shutdown(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusAccepted, map[string]string{"state": "stopping"})
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	s.Log.Info("shutdown requested through the control API")
	go s.Backend.Shutdown()
}

func (s *ControlServer) diagnostics(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/gzip")
	w.Header().Set("Content-Disposition", `attachment; filename="ddinit-diagnostics.tar.gz"`)
	if err := s.Backend.Diagnostics(w); err != nil {
		s.Log.WithError(err).Warn("diagnostics incomplete")
	}
}

// Client talks to the control API.
type Client struct {
	Addr Addr
	http *http.Client
}

// NewClient makes a client for addr. timeout bounds each request, except
// the streaming ones (logs -f).
func NewClient(addr string, timeout time.Duration) (*Client, error) {
	a, err := Parse(addr)
	if err != nil {
		return nil, err
	}
	c := &Client{Addr: a}
	c.http = &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				dl, ok := ctx.Deadline()
				d := 10 * time.Second
				if ok {
					d = time.Until(dl)
				}
				return Dial(a, d)
			},
			DisableKeepAlives: true,
		},
	}
	return c, nil
}

// Do sends a request to the control API.
func (c *Client) Do(ctx context.Context, method, path string, stream bool) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://ddinit"+path, nil)
	if err != nil {
		return nil, err
	}
	hc := c.http
	if stream {
		copy := *c.http
		copy.Timeout = 0
		hc = &copy
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("control API at %s: %w", c.Addr, unwrapURLError(err))
	}
	return resp, nil
}

// Status fetches GET /status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	resp, err := c.Do(ctx, http.MethodGet, "/status", false)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, responseError(resp)
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return st, fmt.Errorf("control API at %s: status: %w", c.Addr, err)
	}
	return st, nil
}

// responseError turns a non-2xx answer into an error carrying its body.
func responseError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
}

// ResponseError is responseError for callers outside the package.
func ResponseError(resp *http.Response) error { return responseError(resp) }

func unwrapURLError(err error) error {
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) {
		if inner := ue.Unwrap(); inner != nil {
			return inner
		}
	}
	return err
}
