package kubeports

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ddinit/ddinit/kubepki"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
)

// fakeAPI is an API server as far as Services go, over TLS with the
// certificates package kubepki makes (the client must present the
// admin's): each list answers what the test puts in lists; each watch
// streams, in the watch framing (a JSON object a line), what the test
// sends on the stream it takes from watches, and ends when that stream
// closes (a clean end), or breaks off on abort.
type fakeAPI struct {
	srv        *httptest.Server
	kubeconfig string // the admin kubeconfig, server https://127.0.0.1:6443

	lists   chan string      // each list's body
	watches chan chan string // each watch's lines
	// watchStatus, when set, answers a watch with that status instead.
	watchStatus chan int

	// requested tells each request as it comes.
	requested chan string

	mu       sync.Mutex
	requests []string // "list", "watch RV", "patch NS/NAME BODY"
	client   string   // the last client certificate's common name
}

const abort = "ABORT" // a line that breaks the stream off

func newFakeAPI(t *testing.T) *fakeAPI {
	t.Helper()
	dir := t.TempDir()
	p, _, err := kubepki.Ensure(filepath.Join(dir, "pki"), kubepki.Options{NodeName: "docker-desktop", NodeIPs: []net.IP{net.ParseIP("100.64.249.2")}, ServiceIP: net.ParseIP("10.96.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	kc, err := p.Kubeconfig("https://127.0.0.1:6443", "admin")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeAPI{kubeconfig: filepath.Join(dir, "admin.conf"), lists: make(chan string, 16), watches: make(chan chan string, 16), watchStatus: make(chan int, 4), requested: make(chan string, 256)}
	if err := os.WriteFile(f.kubeconfig, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(p.Of("apiserver").Cert, p.Of("apiserver").Key)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(p.CA)
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	f.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: roots, ClientAuth: tls.RequireAndVerifyClientCert}
	f.srv.Config.ErrorLog = nil
	f.srv.StartTLS()
	t.Cleanup(func() {
		f.srv.CloseClientConnections()
		f.srv.Close()
	})
	return f
}

// addr is where the API server listens (what PID 1 reports as APIServer).
func (f *fakeAPI) addr() string { return f.srv.Listener.Addr().String() }

func (f *fakeAPI) record(s string) {
	f.mu.Lock()
	f.requests = append(f.requests, s)
	f.mu.Unlock()
	select {
	case f.requested <- s:
	default: // nobody is looking
	}
}

func (f *fakeAPI) seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.requests...)
}

func (f *fakeAPI) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.client = r.TLS.PeerCertificates[0].Subject.CommonName
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/api/v1/services" && r.URL.Query().Get("watch") == "":
		f.record("list")
		select {
		case body := <-f.lists:
			io.WriteString(w, body)
		case <-r.Context().Done():
		}
	case r.Method == http.MethodGet && r.URL.Path == "/api/v1/services":
		q := r.URL.Query()
		f.record("watch " + q.Get("resourceVersion"))
		if q.Get("watch") != "1" || q.Get("allowWatchBookmarks") != "true" || q.Get("timeoutSeconds") == "" {
			http.Error(w, "not a watch as asked: "+r.URL.RawQuery, http.StatusBadRequest)
			return
		}
		select {
		case code := <-f.watchStatus:
			w.WriteHeader(code)
			fmt.Fprintf(w, `{"kind":"Status","code":%d,"reason":"Expired","message":"too old resource version: 1 (2)"}`, code)
			return
		default:
		}
		var lines chan string
		select {
		case lines = <-f.watches:
		case <-r.Context().Done():
			return
		}
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		for {
			select {
			case line, ok := <-lines:
				if !ok {
					return
				}
				if line == abort {
					io.WriteString(w, `{"type":"MODIFIED","object":{"metadata":`) // half an event
					w.(http.Flusher).Flush()
					panic(http.ErrAbortHandler)
				}
				io.WriteString(w, line+"\n")
				w.(http.Flusher).Flush()
			case <-r.Context().Done():
				return
			}
		}
	case r.Method == http.MethodPatch && strings.HasPrefix(r.URL.Path, "/api/v1/namespaces/"):
		b, _ := io.ReadAll(r.Body)
		rest := strings.TrimPrefix(r.URL.Path, "/api/v1/namespaces/")
		ns, rest, _ := strings.Cut(rest, "/services/")
		name, sub, _ := strings.Cut(rest, "/")
		f.record(fmt.Sprintf("patch %s/%s %s %s %s", ns, name, sub, r.Header.Get("Content-Type"), b))
		io.WriteString(w, `{"kind":"Service"}`)
	default:
		http.NotFound(w, r)
	}
}

// svc is a Service's JSON: LoadBalancer when ports are given as
// "PORT:NODEPORT/PROTO", ClusterIP otherwise; ingress "localhost" gives
// it Docker Desktop's status.
func svc(ns, name, rv string, ingressLocalhost bool, ports ...string) string {
	var s service
	s.Metadata.Namespace, s.Metadata.Name, s.Metadata.ResourceVersion = ns, name, rv
	s.Spec.Type = "ClusterIP"
	for _, p := range ports {
		s.Spec.Type = "LoadBalancer"
		var port, node int
		var proto string
		fmt.Sscanf(strings.Replace(p, "/", " ", 1), "%d:%d %s", &port, &node, &proto)
		s.Spec.Ports = append(s.Spec.Ports, servicePort{Protocol: strings.ToUpper(proto), Port: port, NodePort: node})
	}
	if ingressLocalhost {
		s.Status.LoadBalancer.Ingress = []ingress{{Hostname: "localhost"}}
	}
	b, _ := json.Marshal(s)
	return string(b)
}

func list(rv string, items ...string) string {
	return fmt.Sprintf(`{"kind":"ServiceList","apiVersion":"v1","metadata":{"resourceVersion":%q},"items":[%s]}`, rv, strings.Join(items, ","))
}

func ev(typ, object string) string { return fmt.Sprintf(`{"type":%q,"object":%s}`, typ, object) }

// quietLog is a logger whose lines the test can read, and nobody else.
func quietLog() (*logrus.Logger, *test.Hook) {
	log, hook := test.NewNullLogger()
	log.SetLevel(logrus.DebugLevel)
	return log, hook
}

// within fails the test when ch gives nothing in time: a wait for
// something that happens at once, bounded so a bug fails rather than
// hangs.
func within[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: nothing came", what)
		panic("unreachable")
	}
}
