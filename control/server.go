package control

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/ddinit/ddinit/settings"
	"github.com/sirupsen/logrus"
)

// Server serves the control API for a Backend, once: Serve, then Close.
type Server struct {
	Backend Backend
	Log     logrus.FieldLogger
	// StandIn serves the API while no PID 1 does (ddinit run between two
	// of them): /ping, /status and /shutdown from the Backend, every other
	// request 503 with the Health's reason, and no connection kept after
	// its answer, so that the next request reaches the next PID 1.
	StandIn bool

	http      *http.Server
	listeners []net.Listener
	serving   sync.WaitGroup // one per listener, until its Accept fails
	closing   chan struct{}  // closed as Close begins: followed logs end
	closeOnce sync.Once
	mu        sync.Mutex
	busy      map[net.Conn]struct{} // accepted, owed an answer
}

// Handler returns the API's routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ping", s.ping)
	mux.HandleFunc("GET /status", s.status)
	mux.HandleFunc("GET /version", s.version)
	mux.HandleFunc("GET /logs", s.logs)
	mux.HandleFunc("POST /services/{name}/restart", s.restart)
	mux.HandleFunc("POST /shutdown", s.shutdown)
	mux.HandleFunc("GET /diagnostics", s.diagnostics)
	mux.HandleFunc("GET /settings", s.getSettings)
	mux.HandleFunc("PUT /settings", s.putSettings)
	mux.HandleFunc("PUT /version-pack", s.usePack)
	mux.HandleFunc("POST /kubernetes/reset", s.resetKubernetes)
	mux.HandleFunc("GET /kubernetes/kubeconfig", s.kubeconfig)
	return mux
}

// standInHandler is the API while ddinit run stands in for PID 1.
func (s *Server) standInHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ping", s.ping)
	mux.HandleFunc("GET /status", s.status)
	mux.HandleFunc("POST /shutdown", s.shutdown)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h := s.Backend.Health()
		writeError(w, fmt.Errorf("%w: %s: %s", errdefs.ErrUnavailable, h.State, h.Reason), errorBody{})
	})
	return mux
}

// Serve serves on every listener until Close.
func (s *Server) Serve(ls ...net.Listener) {
	handler := s.Handler()
	if s.StandIn {
		handler = s.standInHandler()
	}
	s.busy = map[net.Conn]struct{}{}
	s.listeners = ls
	s.closing = make(chan struct{})
	s.http = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    64 << 10, // a 1 MB header gets 431, not memory
		ConnState:         s.track,
		ErrorLog:          nil,
	}
	if s.StandIn {
		s.http.SetKeepAlivesEnabled(false)
	}
	for _, l := range ls {
		s.serving.Add(1)
		go func() {
			defer s.serving.Done()
			s.http.Serve(l)
		}()
	}
}

// track keeps the connections that are owed an answer: accepted and not
// yet idle after one (keep-alive), hijacked or closed.
func (s *Server) track(c net.Conn, st http.ConnState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st == http.StateNew || st == http.StateActive {
		s.busy[c] = struct{}{}
	} else {
		delete(s.busy, c)
	}
}

func (s *Server) owed() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.busy)
}

// closeGrace is how long Close waits for requests it owes an answer.
const closeGrace = 2 * time.Second

// followerCut is how long a followed log's writes may still take once
// Close has begun.
const followerCut = 200 * time.Millisecond

// Close stops serving without leaving a request unanswered: it stops
// accepting (a connection not yet accepted waits in the socket, which the
// next server of it takes: another PID 1, or ddinit run standing in),
// answers the request of every connection it accepted, for up to
// closeGrace, ends followed logs, then closes what is left. Not
// http.Server.Shutdown: that closes unanswered a connection accepted
// before it whose request is read after it began.
//
// A keep-alive connection is the exception HTTP/1.1 has no cure for: one
// idle (between two requests) is closed, and a request its client sends
// in that moment is lost. Go's client sends an idempotent one (GET) again
// by itself; ddinit's own client uses a connection per request.
func (s *Server) Close() {
	if s.http == nil {
		return
	}
	s.closeOnce.Do(s.close)
}

func (s *Server) close() {
	deadline := time.Now().Add(closeGrace)
	close(s.closing)
	// Answers from here end their connection; idle keep-alive ones close
	// now.
	s.http.SetKeepAlivesEnabled(false)
	for _, l := range s.listeners {
		l.Close()
	}
	s.serving.Wait() // every connection accepted is tracked by now
	for s.owed() > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	s.http.Close()
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// ping answers 200 "OK" when ready, else 503 with the state and why (and
// when to ask again); notes follow on lines of their own either way.
func (s *Server) ping(w http.ResponseWriter, r *http.Request) {
	h := s.Backend.Health()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if h.Ready {
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "OK\n")
		if h.State != "" && h.State != StateRunning {
			// Healthy, and why it is not simply running: idle.
			fmt.Fprintf(w, "state: %s: %s\n", h.State, h.Reason)
		}
	} else {
		w.Header().Set("Retry-After", fmt.Sprint(RetryAfterSeconds))
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "%s: %s\n", h.State, h.Reason)
	}
	for _, n := range h.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.Backend.Status())
}

func (s *Server) version(w http.ResponseWriter, r *http.Request) {
	st := s.Backend.Status()
	writeJSON(w, http.StatusOK, map[string]any{"version": st.Version, "components": st.Components})
}

func (s *Server) logs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	tail := 100
	if v := q.Get("tail"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			writeError(w, fmt.Errorf("%w: tail: want a number of lines", errdefs.ErrInvalidArgument), errorBody{})
			return
		}
		tail = n
	}
	follow := q.Get("follow") == "1" || q.Get("follow") == "true"
	lines, ch, stop, err := s.Backend.Logs(q.Get("service"), tail, follow)
	if err != nil {
		writeError(w, err, errorBody{})
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
	if ch != nil {
		// A follower that does not read (its socket full) would keep
		// this handler in a write, where it cannot see Close: once Close
		// begins, writes get followerCut to finish (a reading follower's
		// stream still ends cleanly), then fail, instead of Close waiting
		// out its whole grace.
		answered := make(chan struct{})
		defer close(answered)
		rc := http.NewResponseController(w)
		go func() {
			select {
			case <-s.closing:
				rc.SetWriteDeadline(time.Now().Add(followerCut))
			case <-answered:
			}
		}()
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
		case <-s.closing:
			return // the stream ends cleanly: the server is closing
		}
	}
}

func (s *Server) restart(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := s.Backend.Restart(name); err != nil {
		writeError(w, err, errorBody{})
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"restarting": name})
}

// shutdown asks the Backend to stop before it answers 202, so that an
// answered shutdown is never lost (Shutdown only asks: it returns at once).
func (s *Server) shutdown(w http.ResponseWriter, r *http.Request) {
	s.Log.Info("shutdown requested through the control API")
	s.Backend.Shutdown()
	writeJSON(w, http.StatusAccepted, map[string]string{"state": StateStopping})
}

func (s *Server) diagnostics(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/gzip")
	w.Header().Set("Content-Disposition", `attachment; filename="ddinit-diagnostics.tar.gz"`)
	if err := s.Backend.Diagnostics(w); err != nil {
		s.Log.WithError(err).Warn("diagnostics incomplete")
	}
}

func (s *Server) getSettings(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.Backend.Settings())
}

// usePack answers 200 with the packs once the choice is recorded;
// otherwise the error's status (400 for a pack that is not one, 409 for
// an older or unreadable dockerd without force, or a switch under way,
// 412 with nothing to roll back to): nothing changed.
func (s *Server) usePack(w http.ResponseWriter, r *http.Request) {
	var req UsePack
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, fmt.Errorf("%w: want {\"path\": …, \"digest\": …, \"force\": …} or {\"rollback\": true, \"force\": …}: %v", errdefs.ErrInvalidArgument, err), errorBody{})
		return
	}
	st, err := s.Backend.UsePack(req)
	if err != nil {
		writeError(w, err, errorBody{})
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// resetKubernetes answers 204 once the cluster's state is wiped (and a
// new cluster started, when Kubernetes is on), or the error's status.
func (s *Server) resetKubernetes(w http.ResponseWriter, r *http.Request) {
	if err := s.Backend.ResetKubernetes(); err != nil {
		writeError(w, err, errorBody{})
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// kubeconfig answers the admin kubeconfig (JSON, which kubectl reads as
// YAML), or the error's status (412 while Kubernetes has never run).
func (s *Server) kubeconfig(w http.ResponseWriter, r *http.Request) {
	b, err := s.Backend.Kubeconfig()
	if err != nil {
		writeError(w, err, errorBody{})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(b)
}

// putSettings answers 200 with the settings in force once the change is
// applied; otherwise the error's status (400 naming the field, 409 for a
// stale generation, 503 while booting: nothing changed; 422 when the
// engine refused the change and it was rolled back), with the settings in
// force.
func (s *Server) putSettings(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20+1))
	switch {
	case err != nil:
		writeError(w, fmt.Errorf("%w: reading the settings document: %v", errdefs.ErrInvalidArgument, err), errorBody{})
		return
	case len(body) > 1<<20:
		writeJSON(w, http.StatusRequestEntityTooLarge, errorBody{Message: "a settings document is at most 1 MB"})
		return
	}
	st, err := s.Backend.PutSettings(body)
	if err != nil {
		var invalid *settings.Invalid
		eb := errorBody{Settings: &st}
		if errors.As(err, &invalid) {
			eb.Field = invalid.Field
		}
		writeError(w, err, eb)
		return
	}
	writeJSON(w, http.StatusOK, st)
}
