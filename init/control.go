package initd

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ddinit/ddinit/logs"
	"github.com/ddinit/ddinit/mounts"
	"github.com/ddinit/ddinit/network"
	"github.com/ddinit/ddinit/services"
	"github.com/ddinit/ddinit/vsock"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Version is ddinit's version; builds may set it with -ldflags -X.
var Version = "0.3.0-dev"

// Boot states the control API reports.
const (
	stateBooting  = "booting"
	stateRunning  = "running"
	stateStopping = "stopping"
	stateFailed   = "failed"
)

// control is PID 1's side of the control API.
type control struct{ in *inner }

func (in *inner) setState(state, reason string) {
	in.mu.Lock()
	in.state, in.reason = state, reason
	in.mu.Unlock()
}

// Status implements vsock.Backend.
func (c control) Status() vsock.Status { return c.status(true) }

// Health implements vsock.Backend: Status without the parts /ping does
// not need (the mount table is read only for /status).
func (c control) Health() (string, bool, string) {
	st := c.status(false)
	return st.State, st.Ready, st.Reason
}

func (c control) status(full bool) vsock.Status {
	in := c.in
	in.mu.Lock()
	st := vsock.Status{
		Version:    Version,
		State:      in.state,
		Reason:     in.reason,
		Started:    in.started,
		Uptime:     time.Since(in.started).Round(time.Second).String(),
		HostPID:    in.cfg.HostPID,
		Components: in.components,
		Goroutines: runtime.NumGoroutine(),
		Orphans:    in.reaper.Orphans(),
	}
	for _, p := range in.phases {
		st.Phases = append(st.Phases, vsock.Phase{Name: p.Name, DurationMs: float64(p.Duration.Microseconds()) / 1000})
	}
	sup, root, ds := in.sup, in.root, in.ds
	st.Drives = append([]vsock.Drive(nil), in.drives...)
	for _, b := range in.binds {
		st.DistroBinds = append(st.DistroBinds, vsock.Bind{Source: b.Source, Target: b.Target, ReadOnly: b.ReadOnly, Slave: b.Slave})
	}
	in.mu.Unlock()
	if ds != nil {
		st.DataStore = vsock.DataStore{Dir: ds.Dir, FreeBytes: ds.FreeBytes, LowSpace: ds.LowSpace}
		// Measured afresh: the store fills while the engine runs. After
		// the root switch the store is reached through its binds.
		for _, p := range []string{"/var/lib/docker", ds.Dir} {
			if free, err := mounts.SpaceLeft(p); err == nil {
				st.DataStore.FreeBytes = free
				st.DataStore.LowSpace = free < mounts.LowSpaceBytes
				break
			}
		}
	}
	if root != nil {
		for _, l := range root.Layers {
			st.Images = append(st.Images, vsock.Image{Name: l.Name, Source: l.Source, Digest: l.Digest, CacheHit: l.CacheHit, Kernel: root.Kernel})
		}
	}
	if full {
		st.Mounts = mountPoints()
		// The link is wired by ddinit run a moment after PID 1 starts.
		n := network.Describe()
		st.Network = &vsock.NetworkState{Link: n.Link, Addresses: n.Addresses, Gateways: n.Gateways, Error: n.Error}
	}
	if sup == nil {
		if st.State == stateRunning {
			st.State = stateBooting
		}
		return st
	}
	st.Containerd = serviceStatus(sup.ContainerdStatus())
	for _, s := range sup.Status() {
		st.Services = append(st.Services, serviceStatus(s))
	}
	if st.State == stateRunning {
		st.Ready = true
		for _, s := range append([]vsock.ServiceStatus{st.Containerd}, st.Services...) {
			if st.Ready && s.Required && s.State != services.StateDisabled && !s.Ready {
				st.Ready = false
				state := s.State
				if state == services.StateFailed {
					state = "failing" // still retried
				}
				st.Reason = fmt.Sprintf("%s is %s", s.Name, state)
				if s.Reason != "" {
					st.Reason += ": " + s.Reason
				}
			}
		}
	}
	if ds != nil && st.DataStore.FreeBytes < mounts.FullBytes {
		st.Ready = false
		st.Reason = fmt.Sprintf("the data store %s is full (%d MB free): free space on the data disk", ds.Dir, st.DataStore.FreeBytes>>20)
	} else if st.DataStore.LowSpace && st.Reason == "" {
		st.Reason = fmt.Sprintf("the data store has only %d MB free", st.DataStore.FreeBytes>>20)
	}
	return st
}

// serviceStatus is the control API's view of a supervised program.
func serviceStatus(s services.Status) vsock.ServiceStatus {
	ss := vsock.ServiceStatus{Name: s.Name, State: s.State, Ready: s.Ready, Required: s.Required, PID: s.PID, Restarts: s.Restarts, Since: s.Since, Reason: s.Reason, NextStart: s.NextStart}
	if e := s.LastExit; e != nil {
		ss.LastExit = &vsock.Exit{Code: e.Code, Signal: e.Signal, Error: e.Error, Cause: e.Cause, Time: e.Time, Ran: e.Ran, Output: e.Output}
	}
	return ss
}

// mountPoints lists this namespace's mount points, as PID 1 sees them.
func mountPoints() []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 9 {
			sep := 6
			for sep < len(f) && f[sep] != "-" {
				sep++
			}
			if sep+1 < len(f) {
				out = append(out, f[4]+" "+f[sep+1])
			}
		}
	}
	return out
}

// Logs implements vsock.Backend. The empty name is ddinit's own log.
func (c control) Logs(name string, tail int, follow bool) ([]vsock.LogLine, <-chan vsock.LogLine, func(), error) {
	in := c.in
	ring := in.ownLog
	label := "ddinit"
	if name != "" && name != "ddinit" {
		in.mu.Lock()
		sup := in.sup
		in.mu.Unlock()
		if sup == nil {
			return nil, nil, nil, fmt.Errorf("%w: %s (the services have not started yet)", vsock.ErrNotFound, name)
		}
		var err error
		if ring, err = sup.Logs(name); err != nil {
			return nil, nil, nil, fmt.Errorf("%w: %s", vsock.ErrNotFound, name)
		}
		label = name
	}
	convert := func(l logs.Line) vsock.LogLine {
		return vsock.LogLine{Time: l.Time, Service: label, Stream: l.Stream, Text: l.Text}
	}
	var lines []vsock.LogLine
	var src <-chan logs.Line
	var stop func()
	if follow {
		// Subscribe before reading the tail so no line falls between.
		src, stop = ring.Follow()
	}
	for _, l := range ring.Tail(tail) {
		lines = append(lines, convert(l))
	}
	if !follow {
		return lines, nil, nil, nil
	}
	out := make(chan vsock.LogLine, 64)
	go func() {
		defer close(out)
		for l := range src {
			out <- convert(l)
		}
	}()
	return lines, out, stop, nil
}

// Restart implements vsock.Backend.
func (c control) Restart(name string) error {
	c.in.mu.Lock()
	sup := c.in.sup
	c.in.mu.Unlock()
	if sup == nil {
		return errors.New("the services have not started yet")
	}
	err := sup.Restart(name)
	if errors.Is(err, services.ErrUnknownService) {
		return fmt.Errorf("%w: %s", vsock.ErrNotFound, name)
	}
	return err
}

// Shutdown implements vsock.Backend: the same as a SIGTERM.
func (c control) Shutdown() {
	select {
	case c.in.shutdown <- "control API":
	default:
	}
}

// secretPattern finds values that look like credentials in log lines.
var secretPattern = regexp.MustCompile(`(?i)((?:password|passwd|secret|token|api[_-]?key|authorization|auth)["']?\s*[:=]\s*["']?(?:bearer\s+|basic\s+)?)([^\s"',;]+)`)

func redact(s string) string { return secretPattern.ReplaceAllString(s, "${1}<redacted>") }

// Diagnostics implements vsock.Backend: a tar.gz of what a person needs to
// see what went wrong, with credentials in logs redacted and nothing taken
// from process environments or command lines.
func (c control) Diagnostics(w io.Writer) error {
	gz := gzip.NewWriter(w)
	tw := tar.NewWriter(gz)
	now := time.Now()
	add := func(name string, b []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: "ddinit-diagnostics/" + name, Mode: 0o644, Size: int64(len(b)), ModTime: now}); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	var errs []error
	status, _ := json.MarshalIndent(c.Status(), "", "  ")
	errs = append(errs, add("status.json", status))
	cfg := c.in.cfg
	cfgJSON, _ := json.MarshalIndent(cfg, "", "  ")
	errs = append(errs, add("config.json", cfgJSON))
	logFiles, _ := filepath.Glob(filepath.Join(innerLogDir, "*.log*"))
	sort.Strings(logFiles)
	for _, p := range logFiles {
		b, err := readRedacted(p, 4<<20)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, add("logs/"+filepath.Base(p), b))
	}
	for name, path := range map[string]string{
		"mountinfo":           "/proc/self/mountinfo",
		"network/dev":         "/proc/net/dev",
		"network/route":       "/proc/net/route",
		"network/ipv6_route":  "/proc/net/ipv6_route",
		"network/if_inet6":    "/proc/net/if_inet6",
		"network/resolv.conf": "/etc/resolv.conf",
		"network/hosts":       "/etc/hosts",
		"version-pack.json":   "/version-pack.json",
		"cgroups":             "/proc/self/cgroup",
		"meminfo":             "/proc/meminfo",
	} {
		if b, err := os.ReadFile(path); err == nil {
			errs = append(errs, add(name, b))
		}
	}
	errs = append(errs, add("processes.txt", processTable()))
	errs = append(errs, add("kernel.log", kernelLogTail(300)))
	errs = append(errs, tw.Close(), gz.Close())
	return errors.Join(errs...)
}

func readRedacted(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > limit {
		f.Seek(st.Size()-limit, io.SeekStart) // the newest part
	}
	var out bytes.Buffer
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		out.WriteString(redact(s.Text()))
		out.WriteByte('\n')
	}
	return out.Bytes(), nil
}

// processTable lists pid, parent, state, name and memory: no command lines
// or environments, which can hold credentials.
func processTable() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%7s %7s %5s %10s  %s\n", "PID", "PPID", "STATE", "RSS(KB)", "NAME")
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(stat)
		open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || close < 0 {
			continue
		}
		f := strings.Fields(s[close+1:])
		if len(f) < 22 {
			continue
		}
		rssPages, _ := strconv.Atoi(f[21])
		fmt.Fprintf(&b, "%7d %7s %5s %10d  %s\n", pid, f[1], f[0], rssPages*os.Getpagesize()/1024, s[open+1:close])
	}
	return b.Bytes()
}

// kernelLogTail reads the last n records of the kernel log without
// waiting for new ones.
func kernelLogTail(n int) []byte {
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return []byte(fmt.Sprintf("kernel log unavailable: %v\n", err))
	}
	defer unix.Close(fd)
	var lines []string
	buf := make([]byte, 8192)
	for {
		k, err := unix.Read(fd, buf)
		if err == unix.EPIPE {
			continue // a record was overwritten while reading
		}
		if err != nil || k <= 0 {
			break
		}
		rec := string(buf[:k])
		if i := strings.IndexByte(rec, ';'); i >= 0 {
			rec = rec[i+1:]
		}
		lines = append(lines, strings.TrimRight(rec, "\n"))
		if len(lines) > 4*n {
			lines = lines[len(lines)-n:]
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return []byte(strings.Join(lines, "\n") + "\n")
}

// ownLogHook keeps PID 1's own log lines in a ring for GET /logs.
type ownLogHook struct{ ring *logs.Ring }

func (h ownLogHook) Levels() []logrus.Level { return logrus.AllLevels }

func (h ownLogHook) Fire(e *logrus.Entry) error {
	keys := make([]string, 0, len(e.Data))
	for k := range e.Data {
		if k != "component" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(e.Message)
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%v", k, e.Data[k])
	}
	h.ring.Add(logs.Line{Time: e.Time, Stream: e.Level.String(), Text: b.String()})
	return nil
}
