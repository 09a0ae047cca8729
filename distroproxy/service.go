package distroproxy

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/ddinit/ddinit/dockerproxy"
	"github.com/ddinit/ddinit/transport"
)

// ServiceSocket is where a distro's proxy answers for its binds, under
// the shared tmpfs: ddinit, in another distro, reaches it there.
func ServiceSocket(shared, distro string) string {
	return filepath.Join(shared, ServicesDir, distro+".sock")
}

type bindRequest struct {
	Path   string `json:"path"`
	Create bool   `json:"create"`
}

type bindAnswer struct {
	Source  string `json:"source,omitempty"`
	Message string `json:"message,omitempty"`
}

// ServeBinds answers POST /binds on l: a bind of one of the distro's
// paths, made for a create that came from Windows (\\wsl$\<distro>\…).
func (b *Binds) ServeBinds(l net.Listener) error {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /binds", func(w http.ResponseWriter, r *http.Request) {
		var req bindRequest
		w.Header().Set("Content-Type", "application/json")
		if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil || !filepath.IsAbs(req.Path) {
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(bindAnswer{Message: "want {\"path\": \"/abs/path\", \"create\": bool}"})
			return
		}
		src, err := b.Ensure(req.Path, req.Create)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest) // the caller's create is refused with the message
			json.NewEncoder(w).Encode(bindAnswer{Message: err.Error()})
			return
		}
		json.NewEncoder(w).Encode(bindAnswer{Source: src})
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 64 << 10}
	return srv.Serve(l)
}

// WSLPaths maps \\wsl$\<distro>\… and \\wsl.localhost\<distro>\… sources
// sent from Windows by asking that distro's proxy for the bind, over one
// client whose idle connections are closed.
type WSLPaths struct {
	shared string
	client *http.Client
}

// NewWSLPaths asks the proxies whose sockets are in the shared tmpfs.
func NewWSLPaths(shared string) *WSLPaths {
	w := &WSLPaths{shared: shared}
	w.client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		// The request's host is the distro's name, hex-encoded: any name
		// WSL allows makes a valid host.
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			host, _, _ := net.SplitHostPort(addr)
			name, err := hex.DecodeString(host)
			if err != nil {
				return nil, fmt.Errorf("bind service host %q: %w", host, err)
			}
			return transport.DialUnix(ctx, ServiceSocket(w.shared, string(name)))
		},
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     30 * time.Second,
	}}
	return w
}

// canonical is the name of the running proxy's distro that name means:
// Windows spells \\wsl$\<distro> in any case.
func (w *WSLPaths) canonical(name string) string {
	entries, _ := os.ReadDir(filepath.Join(w.shared, ServicesDir))
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), ".sock"); ok && strings.EqualFold(n, name) {
			return n
		}
	}
	return name
}

// Translate implements dockerproxy.Translator.
func (w *WSLPaths) Translate(src string, kind dockerproxy.SourceKind) (string, bool, error) {
	distro, path, ok := parseWSLPath(src)
	if !ok {
		return "", false, nil
	}
	if err := ValidDistro(distro); err != nil {
		return "", false, fmt.Errorf("%w: %s: %v", errdefs.ErrInvalidArgument, src, err)
	}
	distro = w.canonical(distro)
	body, _ := json.Marshal(bindRequest{Path: path, Create: kind == dockerproxy.FromBinds})
	resp, err := w.client.Post("http://"+hex.EncodeToString([]byte(distro))+"/binds", "application/json", bytes.NewReader(body))
	if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
		return "", false, fmt.Errorf("%s is in the WSL distro %q, whose docker proxy is not running: turn on WSL integration for it (or check the name)", src, distro)
	}
	if err != nil {
		return "", false, fmt.Errorf("%s: the docker proxy of %q: %w", src, distro, err)
	}
	defer resp.Body.Close()
	var a bindAnswer
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&a); err != nil {
		return "", false, fmt.Errorf("%s: the docker proxy of %q answered %s", src, distro, resp.Status)
	}
	if resp.StatusCode != http.StatusOK {
		return "", false, fmt.Errorf("%s: %s", src, a.Message)
	}
	// The answer is trusted only as one of that distro's binds.
	if b := (&Binds{Distro: distro}); b.ownID(a.Source) == "" || len(b.ownID(a.Source)) != 16 {
		return "", false, fmt.Errorf("%s: the docker proxy of %q answered %q, which is not one of its binds", src, distro, a.Source)
	}
	return a.Source, true, nil
}
