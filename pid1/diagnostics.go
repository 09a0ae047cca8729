package pid1

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
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// secretPattern finds values that look like credentials in log lines.
var secretPattern = regexp.MustCompile(`(?i)((?:password|passwd|secret|token|api[_-]?key|authorization|auth)["']?\s*[:=]\s*["']?(?:bearer\s+|basic\s+)?)([^\s"',;]+)`)

func redact(s string) string { return secretPattern.ReplaceAllString(s, "${1}<redacted>") }

// Diagnostics implements control.Backend: a tar.gz of what a person needs to
// see what went wrong, with credentials in logs redacted and nothing taken
// from process environments or command lines.
func (c backend) Diagnostics(w io.Writer) error {
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
