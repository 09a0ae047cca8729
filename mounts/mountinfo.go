package mounts

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
)

// MountInfo is one line of /proc/PID/mountinfo.
type MountInfo struct {
	ID       string
	Dev      string // major:minor
	Root     string // the path in its file system that is mounted
	Point    string
	Optional []string // shared:N, master:N, propagate_from:N, unbindable
	FSType   string
	Source   string
}

// ReadMountinfo parses a mountinfo file (/proc/self/mountinfo).
func ReadMountinfo(path string) ([]MountInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out, err := ParseMountinfo(f)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return out, nil
}

// ParseMountinfo parses mountinfo text.
func ParseMountinfo(r io.Reader) ([]MountInfo, error) {
	var out []MountInfo
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		sep := -1
		for i := 6; i < len(fields); i++ {
			if fields[i] == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+2 >= len(fields) {
			continue
		}
		out = append(out, MountInfo{
			ID: fields[0], Dev: fields[2], Root: unescapeMountPath(fields[3]), Point: unescapeMountPath(fields[4]),
			Optional: fields[6:sep], FSType: fields[sep+1], Source: unescapeMountPath(fields[sep+2]),
		})
	}
	return out, s.Err()
}

// unescapeMountPath undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
