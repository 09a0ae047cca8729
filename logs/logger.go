package logs

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// File sizes: a rotated log holds this much, and this many old ones stay.
const (
	MaxFileBytes = 8 << 20
	KeepFiles    = 3
)

// New makes a logger for component that writes text to a terminal (JSON
// when out is not one) and, when file is set, JSON lines to it.
func New(component string, out io.Writer, file io.Writer, level logrus.Level) *logrus.Entry {
	l := logrus.New()
	l.SetLevel(level)
	l.SetOutput(out)
	if isTerminal(out) {
		l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: time.RFC3339Nano})
	} else {
		l.SetFormatter(&logrus.JSONFormatter{TimestampFormat: time.RFC3339Nano})
	}
	e := l.WithField("component", component)
	if file != nil {
		AddFile(e, file)
	}
	return e
}

// AddFile makes log (one made by New) also write JSON lines to file, until
// the returned function is called: from then on nothing more is written
// to file (it is not closed: that is its opener's).
func AddFile(log *logrus.Entry, file io.Writer) (remove func()) {
	h := &fileHook{w: file, f: &logrus.JSONFormatter{TimestampFormat: time.RFC3339Nano}}
	log.Logger.AddHook(h)
	return func() { h.off.Store(true) }
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

type fileHook struct {
	w   io.Writer
	f   logrus.Formatter
	off atomic.Bool // removed: logrus has no safe way to drop one hook
}

func (h *fileHook) Levels() []logrus.Level { return logrus.AllLevels }

func (h *fileHook) Fire(e *logrus.Entry) error {
	if h.off.Load() {
		return nil
	}
	b, err := h.f.Format(e)
	if err != nil {
		return err
	}
	_, err = h.w.Write(b)
	return err
}

// Relay reads JSON log lines (another ddinit process's log) from r and
// logs each through log with its own level, message and fields. Lines that
// are not JSON are logged as they are. It returns at EOF.
func Relay(r io.Reader, log *logrus.Entry) {
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		RelayLine(s.Bytes(), log)
	}
}

// RelayLine logs one JSON log line through log.
func RelayLine(b []byte, log *logrus.Entry) {
	var m map[string]any
	if len(bytes.TrimSpace(b)) == 0 {
		return
	}
	if json.Unmarshal(b, &m) != nil {
		log.Info(string(b))
		return
	}
	level, err := logrus.ParseLevel(str(m["level"]))
	if err != nil {
		level = logrus.InfoLevel
	}
	msg := str(m["msg"])
	e := log
	for k, v := range m {
		switch k {
		case "level", "msg", "time":
			continue
		}
		e = e.WithField(k, v)
	}
	if t, err := time.Parse(time.RFC3339Nano, str(m["time"])); err == nil {
		e = e.WithTime(t)
	}
	if level <= logrus.FatalLevel {
		level = logrus.ErrorLevel // a relayed fatal must not end the relaying process
	}
	e.Log(level, msg)
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

// Sink is where a service's output goes: its ring buffer and its log file,
// each line a JSON object carrying the component.
type Sink struct {
	Component string
	Ring      *Ring
	File      io.Writer
}

// Writer returns a writer for one stream ("stdout" or "stderr") of the
// service; output is cut into lines. Close it to flush a last partial line.
func (s *Sink) Writer(stream string) io.WriteCloser {
	return &lineWriter{sink: s, stream: stream}
}

// lineWriter may be closed by the supervisor while containerd's copy
// goroutine still writes (a task whose containerd died), hence the lock.
type lineWriter struct {
	mu     sync.Mutex
	sink   *Sink
	stream string
	buf    []byte
}

const maxLine = 16 << 10

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			w.buf = append(w.buf, p...)
			if len(w.buf) > maxLine {
				w.emit(w.buf)
				w.buf = w.buf[:0]
			}
			break
		}
		w.emit(append(w.buf, p[:i]...))
		w.buf = w.buf[:0]
		p = p[i+1:]
	}
	return n, nil
}

func (w *lineWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.emit(w.buf)
		w.buf = nil
	}
	return nil
}

func (w *lineWriter) emit(b []byte) {
	l := Line{Time: time.Now().UTC(), Stream: w.stream, Text: strings.TrimRight(string(b), "\r")}
	if w.sink.Ring != nil {
		w.sink.Ring.Add(l)
	}
	if w.sink.File != nil {
		rec := struct {
			Time      string `json:"time"`
			Component string `json:"component"`
			Stream    string `json:"stream"`
			Msg       string `json:"msg"`
		}{l.Time.Format(time.RFC3339Nano), w.sink.Component, l.Stream, l.Text}
		b, _ := json.Marshal(rec)
		w.sink.File.Write(append(b, '\n'))
	}
}
