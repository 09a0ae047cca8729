package control

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/containerd/errdefs/pkg/errhttp"
	"github.com/ddinit/ddinit/settings"
)

// RetryAfterSeconds is what a 503 asks the client to wait: ddinit is
// booting, or the engine is starting.
const RetryAfterSeconds = 1

// StatusCode is the one place an error's kind becomes an HTTP status:
// containerd's mapping (not found 404, invalid argument 400, conflict
// 409, failed precondition 412, unavailable 503 …), and 422 for a change
// that was applied, refused and rolled back. An error without a kind is
// a 500.
func StatusCode(err error) int {
	switch {
	case err == nil:
		return http.StatusOK
	case settings.IsRolledBack(err):
		return http.StatusUnprocessableEntity
	}
	return errhttp.ToHTTP(err)
}

// kindOf is the error kind a status code stands for: the inverse of
// StatusCode, for the client.
func kindOf(code int) error {
	if code == http.StatusUnprocessableEntity {
		return settings.ErrRolledBack
	}
	return errhttp.ToNative(code)
}

// errorBody is every error answer's body.
type errorBody struct {
	Message string `json:"message"`
	// Field names what was invalid in a settings document.
	Field string `json:"field,omitempty"`
	// Settings are the settings in force after a refused change.
	Settings *Settings `json:"settings,omitempty"`
}

// writeError answers err with its status and a JSON body; a 503 says when
// to try again.
func writeError(w http.ResponseWriter, err error, body errorBody) {
	code := StatusCode(err)
	if code == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", fmt.Sprint(RetryAfterSeconds))
	}
	body.Message = err.Error()
	writeJSON(w, code, body)
}

// APIError is an error answer of the control API; it carries the kind its
// status stands for, so callers ask errdefs (or settings.IsRolledBack), not the text.
type APIError struct {
	Status  string // "409 Conflict"
	Code    int
	Message string
}

func (e *APIError) Error() string { return e.Status + ": " + e.Message }

// Unwrap gives the error the kind of its status code.
func (e *APIError) Unwrap() error { return kindOf(e.Code) }

// responseError reads an error answer: its JSON message, or its text.
func responseError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	msg := strings.TrimSpace(string(b))
	var body errorBody
	if json.Unmarshal(b, &body) == nil && body.Message != "" {
		msg = body.Message
	}
	return &APIError{Status: resp.Status, Code: resp.StatusCode, Message: msg}
}

// ResponseError is responseError for callers outside the package.
func ResponseError(resp *http.Response) error { return responseError(resp) }
