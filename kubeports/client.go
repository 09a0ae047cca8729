package kubeports

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/ddinit/ddinit/kubeapi"
)

// apiClient is the API server's client as the follower uses it.
type apiClient struct{ *kubeapi.Client }

// watchTimeout is how long the API server keeps one watch open: a watch
// that died silently (the link) is noticed within it.
const watchTimeout = 5 * time.Minute

// errGone is a watch whose resourceVersion is too old (410 Gone).
var errGone = kubeapi.ErrGone

// list reads every Service and the resourceVersion to watch from; the
// kubeconfig is read again first.
func (a *apiClient) list(ctx context.Context) (string, []service, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := a.Do(ctx, true, http.MethodGet, "/api/v1/services", nil, nil)
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	var l struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
		Items []service `json:"items"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&l); err != nil {
		return "", nil, fmt.Errorf("the list of Services: %w", err)
	}
	return l.Metadata.ResourceVersion, l.Items, nil
}

// event is one change a watch reports: ADDED, MODIFIED, DELETED (with the
// Service), or BOOKMARK (only a newer resourceVersion).
type event struct {
	Type    string
	Service service
}

// watch follows the Services from rv, calling each for every change, in
// order, until the stream ends: nil when the API server ended it (its
// timeout: watch again from the last resourceVersion), errGone when rv is
// too old, another error when it broke.
func (a *apiClient) watch(ctx context.Context, rv string, each func(event)) error {
	ctx, cancel := context.WithTimeout(ctx, watchTimeout+30*time.Second)
	defer cancel()
	q := url.Values{
		"watch":               {"1"},
		"resourceVersion":     {rv},
		"allowWatchBookmarks": {"true"},
		"timeoutSeconds":      {strconv.Itoa(int(watchTimeout / time.Second))},
	}
	resp, err := a.Do(ctx, false, http.MethodGet, "/api/v1/services", q, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	// The watch framing: one JSON object a change, {"type": …, "object": …}.
	dec := json.NewDecoder(resp.Body)
	for {
		var ev struct {
			Type   string          `json:"type"`
			Object json.RawMessage `json:"object"`
		}
		if err := dec.Decode(&ev); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("the watch of Services broke: %w", err)
		}
		switch ev.Type {
		case "ADDED", "MODIFIED", "DELETED", "BOOKMARK":
			var s service
			if err := json.Unmarshal(ev.Object, &s); err != nil {
				return fmt.Errorf("the watch of Services sent a %s that is no Service: %w", ev.Type, err)
			}
			each(event{Type: ev.Type, Service: s})
		case "ERROR":
			var st kubeapi.Status
			json.Unmarshal(ev.Object, &st)
			if st.Code == http.StatusGone {
				return fmt.Errorf("the watch of Services: %w: %s", errGone, st.Message)
			}
			return fmt.Errorf("the watch of Services: error %d %s: %s", st.Code, st.Reason, st.Message)
		default:
			return fmt.Errorf("the watch of Services sent an event of no known type %q", ev.Type)
		}
	}
}

// patchIngress sets a Service's status.loadBalancer.ingress to localhost
// (ingressPatch, a merge patch of its status subresource).
func (a *apiClient) patchIngress(ctx context.Context, namespace, name string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	path := "/api/v1/namespaces/" + url.PathEscape(namespace) + "/services/" + url.PathEscape(name) + "/status"
	resp, err := a.Do(ctx, false, http.MethodPatch, path, nil, []byte(ingressPatch))
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return resp.Body.Close()
}
