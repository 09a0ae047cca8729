package memtrim

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Settle returns the free heap to the kernel and drops this process's
// mappings of its executable's read-only pages. It returns the bytes of
// the executable's mappings that were resident before and after.
func Settle() (before, after int64, err error) {
	debug.FreeOSMemory()
	before, err = ImageResident()
	if err != nil {
		return 0, 0, err
	}
	if err := DropImage(); err != nil {
		return before, before, err
	}
	after, err = ImageResident()
	return before, after, err
}

// region is one mapping of the executable.
type region struct {
	start, end uintptr
	writable   bool
	private    bool
}

// imageRegions lists the mappings of /proc/self/exe in /proc/self/maps.
func imageRegions() ([]region, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return nil, fmt.Errorf("read /proc/self/exe: %w", err)
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return nil, fmt.Errorf("read /proc/self/maps: %w", err)
	}
	var out []region
	sc := bufio.NewScanner(bytes.NewReader(maps))
	for sc.Scan() {
		// start-end perms offset dev inode path
		f := strings.Fields(sc.Text())
		if len(f) < 6 || strings.Join(f[5:], " ") != exe {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		s, err1 := strconv.ParseUint(lo, 16, 64)
		e, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || len(f[1]) < 4 {
			continue
		}
		out = append(out, region{start: uintptr(s), end: uintptr(e), writable: f[1][1] == 'w', private: f[1][3] == 'p'})
	}
	return out, sc.Err()
}

// DropImage unmaps the executable's read-only private mappings from this
// process's page tables (MADV_DONTNEED). Only read-only mappings: a
// private writable mapping holds this process's own copies, which
// MADV_DONTNEED would throw away. Read-only ones hold nothing but the
// file's pages, which the next access maps again from the page cache.
func DropImage() error {
	regions, err := imageRegions()
	if err != nil {
		return err
	}
	for _, r := range regions {
		if r.writable || !r.private || r.end <= r.start {
			continue
		}
		// The raw call: the range is not Go memory, so it is named by
		// address, not by a slice.
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, r.start, r.end-r.start, unix.MADV_DONTNEED); errno != 0 {
			return fmt.Errorf("madvise %#x-%#x: %w", r.start, r.end, errno)
		}
	}
	return nil
}

// ImageResident is how many bytes of the executable's mappings are
// resident in this process (the Rss of those lines in smaps).
func ImageResident() (int64, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, err
	}
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return 0, fmt.Errorf("read /proc/self/smaps: %w", err)
	}
	var total int64
	inImage := false
	sc := bufio.NewScanner(bytes.NewReader(smaps))
	for sc.Scan() {
		line := sc.Text()
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":") {
			inImage = len(f) >= 6 && strings.Join(f[5:], " ") == exe
			continue
		}
		if inImage && f[0] == "Rss:" && len(f) >= 2 {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			total += kb << 10
		}
	}
	return total, sc.Err()
}
