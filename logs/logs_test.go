package logs

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sirupsen/logrus"
)

func TestRotatingFileKeepsItsLimit(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.log")
	r, err := OpenRotating(path, 100, 2)
	if err != nil {
		t.Fatal(err)
	}
	line := strings.Repeat("a", 39) + "\n"
	for i := 0; i < 20; i++ {
		r.Write([]byte(line))
	}
	r.Close()
	for _, p := range []string{path, path + ".1", path + ".2"} {
		st, err := os.Stat(p)
		if err != nil || st.Size() > 100 || st.Size()%40 != 0 {
			t.Fatalf("%s: %v %v", p, st, err)
		}
	}
	if _, err := os.Stat(path + ".3"); err == nil {
		t.Fatal("more rotated files than asked for")
	}
}

func TestRingTailAndFollow(t *testing.T) {
	r := NewRing(3)
	ch, stop := r.Follow()
	for _, s := range []string{"a", "b", "c", "d"} {
		r.Add(Line{Text: s})
	}
	var got []string
	for _, l := range r.Tail(0) {
		got = append(got, l.Text)
	}
	if strings.Join(got, "") != "bcd" || len(r.Tail(2)) != 2 || r.Tail(2)[0].Text != "c" {
		t.Fatalf("tail %v", got)
	}
	if l := <-ch; l.Text != "a" {
		t.Fatalf("follow got %q", l.Text)
	}
	stop()
}

func TestSinkWritesLinesWithComponent(t *testing.T) {
	var file bytes.Buffer
	s := &Sink{Component: "dockerd", Ring: NewRing(10), File: &file}
	w := s.Writer("stderr")
	w.Write([]byte("first line\nsecond "))
	w.Write([]byte("line\npartial"))
	w.Close()
	lines := strings.Split(strings.TrimSpace(file.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines: %q", len(lines), file.String())
	}
	var rec map[string]string
	json.Unmarshal([]byte(lines[1]), &rec)
	if rec["component"] != "dockerd" || rec["msg"] != "second line" || rec["stream"] != "stderr" {
		t.Fatalf("record %v", rec)
	}
}

func TestRelayKeepsLevelAndFields(t *testing.T) {
	var out bytes.Buffer
	log := New("ddinit", &out, nil, logrus.DebugLevel)
	Relay(strings.NewReader(`{"level":"warning","msg":"service exited","service":"dockerd","time":"2026-01-01T00:00:00Z"}`+"\nnot json\n"), log)
	s := out.String()
	if !strings.Contains(s, `"level":"warning"`) || !strings.Contains(s, `"service":"dockerd"`) || !strings.Contains(s, "not json") {
		t.Fatalf("relayed: %s", s)
	}
}

// In a synctest bubble: the interval is the bubble's time, which a
// loaded machine does not stretch between the calls.
func TestEveryHoldsBackAndCounts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := &Every{Interval: 50 * time.Millisecond}
		if ok, n := e.Allow(); !ok || n != 0 {
			t.Fatalf("first: %v %d", ok, n)
		}
		for range 5 {
			if ok, _ := e.Allow(); ok {
				t.Fatal("let through within the interval")
			}
		}
		time.Sleep(60 * time.Millisecond)
		if ok, n := e.Allow(); !ok || n != 5 {
			t.Fatalf("after the interval: %v, %d held back", ok, n)
		}
	})
}

// A file added to a log gets its lines until it is removed, and none after.
func TestAddFileUntilRemoved(t *testing.T) {
	var out, file bytes.Buffer
	log := New("t", &out, nil, logrus.InfoLevel)
	remove := AddFile(log, &file)
	log.Info("kept")
	remove()
	log.Info("after")
	if !strings.Contains(file.String(), `"msg":"kept"`) || strings.Contains(file.String(), "after") {
		t.Fatalf("file got: %s", file.String())
	}
	if !strings.Contains(out.String(), "after") {
		t.Fatalf("the log's own output lost a line after the file was removed: %s", out.String())
	}
}
