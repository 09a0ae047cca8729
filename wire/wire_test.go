package wire

import (
	"errors"
	"fmt"
	"io"
	"os"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/enginestate"
	"github.com/ddinit/ddinit/mounts"
	"github.com/ddinit/ddinit/settings"
)

// An error keeps its kind and its text across the wire.
func TestErrorsKeepTheirKind(t *testing.T) {
	for _, k := range kinds {
		err := fmt.Errorf("wrapped: %w", fmt.Errorf("%w: the cause", k.err))
		back := EncodeError(err).Err()
		if !k.is(back) || back.Error() != err.Error() {
			t.Errorf("%s: came back as %v (%T)", k.name, back, back)
		}
	}
	if back := EncodeError(errors.New("plain")).Err(); back.Error() != "plain" || errdefs.IsConflict(back) {
		t.Errorf("a plain error came back as %v", back)
	}
	if EncodeError(nil) != nil || (*Error)(nil).Err() != nil {
		t.Error("nil did not stay nil")
	}
	if !settings.IsRolledBack(EncodeError(settings.RolledBack("refused")).Err()) {
		t.Error("rolled back lost its kind")
	}
}

func pair(t *testing.T) (*Conn, *Conn) {
	a, b, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	ca, err := NewConn(a)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := NewConn(b)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ca.Close(); cb.Close() })
	return ca, cb
}

// Messages arrive whole, in order, with the files sent beside them; one
// that is garbled is an error and the next one is read.
func TestMessagesAndFiles(t *testing.T) {
	a, b := pair(t)
	f, err := os.Open("wire.go")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sent := []Message{
		{Kind: Sockets, Sockets: map[string]string{"docker": "/run/docker.sock"}},
		{Kind: EngineState, Engine: &Engine{State: enginestate.Stopped}},
		{Kind: PackReply, PackAnswer: &PackAnswer{ID: 7, Err: EncodeError(fmt.Errorf("%w: older", errdefs.ErrConflict))}},
		{Kind: KubernetesState, Kube: &Kube{On: true, Ready: true, APIServer: "100.64.249.2:6443", Kubeconfig: "etc/kubernetes/admin.conf"}},
		{Kind: KubernetesState, Kube: &Kube{}}, // off: still a payload
	}
	for _, m := range sent {
		if err := a.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Send(Message{Kind: DrivesNow, Drives: &Drives{Now: []mounts.Drive{{Letter: "c"}}, Attach: []string{"c"}}}, f); err != nil {
		t.Fatal(err)
	}
	for i, want := range sent {
		got, files, err := b.Receive()
		if err != nil || got.Kind != want.Kind || len(files) != 0 {
			t.Fatalf("message %d: %+v %v", i, got, err)
		}
		if want.Kube != nil && (got.Kube == nil || *got.Kube != *want.Kube) {
			t.Fatalf("message %d: the cluster's state came as %+v, sent %+v", i, got.Kube, want.Kube)
		}
	}
	got, files, err := b.Receive()
	if err != nil || got.Kind != DrivesNow || len(files) != 1 {
		t.Fatalf("drives: %+v %d %v", got, len(files), err)
	}
	st, _ := files[0].Stat()
	if st.Name() != "passed" && st.Size() == 0 {
		t.Fatalf("the file that came: %v", st)
	}
	files[0].Close()

	// A message of no known kind, or without its payload, is refused on
	// the way out and on the way in.
	for _, bad := range []Message{{Kind: "bogus"}, {Kind: Sockets}, {Kind: EngineState, Engine: &Engine{State: "nowhere"}}, {Kind: KubernetesState}} {
		if err := a.Send(bad); err == nil {
			t.Errorf("%+v was sent", bad)
		}
	}
	a.c.Write([]byte(`{"kind":"pack-reply"}`))
	a.c.Write([]byte(`not json`))
	a.Send(Message{Kind: Replace, Reason: "switching"})
	for range 2 {
		var garbled *GarbledError
		if _, _, err := b.Receive(); !errors.As(err, &garbled) {
			t.Fatalf("a garbled message: %v", err)
		}
	}
	if m, _, err := b.Receive(); err != nil || m.Reason != "switching" {
		t.Fatalf("after the garbled ones: %+v %v", m, err)
	}
	a.Close()
	if _, _, err := b.Receive(); !errors.Is(err, io.EOF) {
		t.Fatalf("at the other end's close: %v", err)
	}
}

func TestCalls(t *testing.T) {
	var c Calls[control.PackState]
	id, ch, _ := c.Begin()
	id2, _, forget := c.Begin()
	forget()
	c.Answered(id2, control.PackState{}) // nobody waits: dropped
	c.Answered(id, control.PackState{Trial: true})
	if r := <-ch; !r.Trial {
		t.Fatal("the answer was not handed over")
	}
}

func TestCallsAbandoned(t *testing.T) {
	var c Calls[Reply]
	_, ch, _ := c.Begin()
	c.Abandon(func(id int64) Reply { return Reply{ID: id, Err: &Error{Message: "gone"}} })
	if r := <-ch; r.Err == nil || r.Err.Message != "gone" {
		t.Fatalf("%+v", r)
	}
}
