package mounts

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// DrivesTarget is where the Windows drives appear inside the namespace:
// C: is /run/desktop/mnt/host/c, as docker run -v paths name it.
const DrivesTarget = "/run/desktop/mnt/host"

// Drive is a Windows drive mounted by WSL under the automount root.
type Drive struct {
	Letter string `json:"letter"`
	Path   string `json:"path"`   // where the distro has it
	FSType string `json:"fsType"` // 9p (aname=drvfs) or virtiofs on WSL
}

// Drives lists the mount points directly under root named by a single
// letter, from the mount table given (normally /proc/self/mountinfo).
func Drives(mountinfo, root string) ([]Drive, error) {
	f, err := os.Open(mountinfo)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	root = filepath.Clean(root)
	seen := map[string]Drive{}
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 10 {
			continue
		}
		point := unescapeMountPath(fields[4])
		if filepath.Dir(point) != root {
			continue
		}
		letter := filepath.Base(point)
		if len(letter) != 1 || letter[0] < 'a' || letter[0] > 'z' {
			continue
		}
		fstype := ""
		for i := 6; i < len(fields)-1; i++ {
			if fields[i] == "-" {
				fstype = fields[i+1]
				break
			}
		}
		seen[letter] = Drive{Letter: letter, Path: point, FSType: fstype} // the last mount on a point wins
	}
	var out []Drive
	for _, d := range seen {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Letter < out[j].Letter })
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

// SpaceLeft measures the free space of dir's file system.
func SpaceLeft(dir string) (free uint64, err error) {
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		return 0, err
	}
	return fs.Bavail * uint64(fs.Bsize), nil
}
