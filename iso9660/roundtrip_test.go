package iso9660

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"github.com/ddinit/ddinit/internal/testutil"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// featureTree builds every kind of entry the extractor must restore.
func featureTree(t testing.TB, src string) {
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	write := func(rel, content string, perm os.FileMode) {
		p := filepath.Join(src, rel)
		must(os.MkdirAll(filepath.Dir(p), 0o755))
		must(os.WriteFile(p, []byte(content), perm))
		must(os.Chmod(p, perm))
	}
	write(".hidden", "dotfile\n", 0o644)
	write(".config/settings", "key=value\n", 0o600)
	write(strings.Repeat("n", 200), "a 200-character name\n", 0o644)
	deep := filepath.Join("a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l")
	write(filepath.Join(deep, "deep.txt"), "twelve levels down\n", 0o644)
	write("héllo wörld ☃.txt", "unicode\n", 0o644)
	write("日本語/ファイル", "japanese\n", 0o644)
	write("emoji-🐳", "whale\n", 0o644)
	write("empty", "", 0o644)
	write("mode0600", "private\n", 0o600)
	write("exec", "#!/bin/sh\necho hi\n", 0o755)
	write("setuid", "suid\n", 0o4755)
	write("setgid", "sgid\n", 0o2755)
	must(os.MkdirAll(filepath.Join(src, "sticky"), 0o755))
	must(os.Chmod(filepath.Join(src, "sticky"), 0o1777|os.ModeSticky))
	must(unix.Chmod(filepath.Join(src, "sticky"), 0o1777))
	must(os.MkdirAll(filepath.Join(src, "private"), 0o700))
	must(os.MkdirAll(filepath.Join(src, "emptydir"), 0o755))
	big := make([]byte, 3<<20+123)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range big {
		big[i] = byte(r.Uint32())
	}
	write("big.bin", string(big), 0o644)
	write("owned/by-1000", "user file\n", 0o644)
	must(os.Lchown(filepath.Join(src, "owned/by-1000"), 1000, 1000))
	must(os.Lchown(filepath.Join(src, "owned"), 1000, 1001))
	write("hardlinks/one", "linked\n", 0o644)
	must(os.MkdirAll(filepath.Join(src, "hardlinks/sub"), 0o755))
	must(os.Link(filepath.Join(src, "hardlinks/one"), filepath.Join(src, "hardlinks/two")))
	must(os.Link(filepath.Join(src, "hardlinks/one"), filepath.Join(src, "hardlinks/sub/three")))
	// A target of more than 600 bytes: several SL records, via CE.
	var long []string
	for i := 0; len(strings.Join(long, "/")) < 620; i++ {
		long = append(long, fmt.Sprintf("component-%02d-%s", i, strings.Repeat("x", 20)))
	}
	must(os.Symlink(strings.Join(long, "/"), filepath.Join(src, "longlink")))
	must(os.Symlink("/etc/passwd", filepath.Join(src, "abslink")))
	must(os.Symlink("../a/b", filepath.Join(src, "owned/rellink")))
	must(os.Symlink("nowhere", filepath.Join(src, "dangling")))
	must(os.Symlink(".", filepath.Join(src, "dotlink")))
	must(os.Lchown(filepath.Join(src, "dangling"), 1000, 1000))
	must(os.MkdirAll(filepath.Join(src, "dev"), 0o755))
	must(unix.Mknod(filepath.Join(src, "dev/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(unix.Mknod(filepath.Join(src, "dev/loop0"), unix.S_IFBLK|0o660, int(unix.Mkdev(7, 0))))
	must(unix.Mknod(filepath.Join(src, "dev/bignum"), unix.S_IFCHR|0o600, int(unix.Mkdev(300, 70000))))
	must(unix.Mkfifo(filepath.Join(src, "dev/fifo"), 0o644))
	must(unix.Chmod(filepath.Join(src, "dev/fifo"), 0o620))
	// Distinct mtimes, directories last so their own stick.
	var dirs []string
	i := 0
	must(filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, p)
			return nil
		}
		i++
		ts := time.Date(2001+i%20, time.Month(1+i%12), 1+i%28, i%24, i%60, i%60, 0, time.UTC)
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{unix.NsecToTimespec(ts.UnixNano()), unix.NsecToTimespec(ts.UnixNano())}, unix.AT_SYMLINK_NOFOLLOW)
	}))
	for j := len(dirs) - 1; j >= 0; j-- {
		ts := time.Date(1999, 12, 31, 23, 59, j%60, 0, time.UTC)
		must(os.Chtimes(dirs[j], ts, ts))
	}
}

// fileInfo is what the comparison checks of each entry.
type fileInfo struct {
	Type   string
	Mode   uint32
	UID    uint32
	GID    uint32
	Size   int64
	Sum    [32]byte
	Target string
	Rdev   uint64
	Mtime  int64
	ino    uint64
	nlink  uint64
}

func describe(t testing.TB, root string) (map[string]fileInfo, [][]string) {
	t.Helper()
	out := map[string]fileInfo{}
	groups := map[uint64][]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		fi := fileInfo{Mode: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid, Mtime: st.Mtim.Sec, ino: st.Ino, nlink: uint64(st.Nlink)}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			fi.Type, fi.Size = "file", st.Size
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			fi.Sum = sha256.Sum256(b)
			if st.Nlink > 1 {
				groups[st.Ino] = append(groups[st.Ino], rel)
			}
		case unix.S_IFDIR:
			fi.Type = "dir"
		case unix.S_IFLNK:
			fi.Type = "symlink"
			fi.Target, _ = os.Readlink(p)
		case unix.S_IFCHR:
			fi.Type, fi.Rdev = "chardev", uint64(st.Rdev)
		case unix.S_IFBLK:
			fi.Type, fi.Rdev = "blockdev", uint64(st.Rdev)
		case unix.S_IFIFO:
			fi.Type = "fifo"
		default:
			fi.Type = fmt.Sprintf("mode %o", st.Mode)
		}
		out[rel] = fi
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var g [][]string
	for _, names := range groups {
		sort.Strings(names)
		g = append(g, names)
	}
	sort.Slice(g, func(i, j int) bool { return g[i][0] < g[j][0] })
	return out, g
}

func compareTrees(t *testing.T, want, got string) {
	t.Helper()
	w, wg := describe(t, want)
	g, gg := describe(t, got)
	for rel, wi := range w {
		gi, ok := g[rel]
		if !ok {
			t.Errorf("%s: missing from the extracted tree", rel)
			continue
		}
		wi.ino, gi.ino, wi.nlink, gi.nlink = 0, 0, 0, 0
		if wi != gi {
			t.Errorf("%s:\n source    %+v\n extracted %+v", rel, wi, gi)
		}
	}
	for rel := range g {
		if _, ok := w[rel]; !ok {
			t.Errorf("%s: extracted but not in the source", rel)
		}
	}
	if fmt.Sprint(wg) != fmt.Sprint(gg) {
		t.Errorf("hard-link groups differ:\n source    %v\n extracted %v", wg, gg)
	}
	if len(wg) == 0 {
		t.Error("the source has no hard links: the test tree is wrong")
	}
}

func TestRoundTripRockRidge(t *testing.T) {
	testutil.RequiresRoot(t)
	src, b := testutil.XorrisoTree(t, func(src string) { featureTree(t, src) },
		"-R", "-J", "-joliet-long", "--hardlinks", "-rr_reloc_dir", "rr_moved")
	// The image really exercises relocation and split symlinks.
	for _, sig := range []string{"CL\x0c\x01", "RE\x04\x01", "CE\x1c\x01"} {
		if !bytes.Contains(b, []byte(sig)) {
			t.Fatalf("xorriso wrote no %q entry: the round trip would not test it", sig[:2])
		}
	}
	_, img := writeImage(t, b)
	if img.Format() != "rock-ridge" {
		t.Fatalf("format %q", img.Format())
	}
	for _, workers := range []int{1, 2, 8} {
		t.Run(fmt.Sprintf("workers=%d", workers), func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			tree, err := img.Walk()
			if err != nil {
				t.Fatal(err)
			}
			if err := ExtractAtomic(img, tree, out, ExtractOptions{Workers: workers, Sync: workers == 2}); err != nil {
				t.Fatal(err)
			}
			compareTrees(t, src, out)
		})
	}
}

func TestRoundTripJolietOnly(t *testing.T) {
	names := []string{"Readme.md", "mixed Case Name.txt", "héllo wörld.txt", "日本語/ファイル.txt", "dir.with.dots/file", strings.Repeat("L", 90) + ".txt"}
	src, b := testutil.XorrisoTree(t, func(src string) {
		for _, n := range names {
			p := filepath.Join(src, n)
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.WriteFile(p, []byte("content of "+n), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}, "--norock", "-J", "-joliet-long")
	_, img := writeImage(t, b)
	if img.Format() != "joliet" {
		t.Fatalf("format %q, want joliet", img.Format())
	}
	out := filepath.Join(t.TempDir(), "out")
	if err := extractImage(img, out); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		got, err := os.ReadFile(filepath.Join(out, n))
		if err != nil {
			t.Errorf("Joliet name %q: %v", n, err)
			continue
		}
		want, _ := os.ReadFile(filepath.Join(src, n))
		if !bytes.Equal(got, want) {
			t.Errorf("%s: content %q, want %q", n, got, want)
		}
	}
	var extracted []string
	filepath.WalkDir(out, func(p string, d fs.DirEntry, err error) error {
		if !d.IsDir() {
			rel, _ := filepath.Rel(out, p)
			extracted = append(extracted, rel)
		}
		return nil
	})
	want := slices.Clone(names)
	slices.Sort(want)
	slices.Sort(extracted)
	if !slices.Equal(want, extracted) {
		t.Fatalf("extracted %q, want %q", extracted, want)
	}
}

// The reader agrees with the kernel-independent reference, bsdtar, on the
// version pack image: same names, sizes and content.
func TestVersionPackMatchesBsdtar(t *testing.T) {
	iso := filepath.Join("..", "build", "docker.iso")
	if _, err := os.Stat(iso); err != nil {
		t.Skip("build/docker.iso is not built (make isos)")
	}
	testutil.RequireTool(t, "bsdtar")
	ref := t.TempDir()
	if b, err := exec.Command("bsdtar", "-xf", iso, "-C", ref).CombinedOutput(); err != nil {
		t.Fatalf("bsdtar: %v %s", err, b)
	}
	img, err := OpenFile(iso)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	out := filepath.Join(t.TempDir(), "out")
	if err := extractImage(img, out); err != nil {
		t.Fatal(err)
	}
	compareNamesAndContent(t, ref, out)
	if _, err := os.Stat(filepath.Join(out, "containers/services/dockerd/config.json")); err != nil {
		t.Fatalf("the version pack lacks the dockerd service: %v", err)
	}
}

func compareNamesAndContent(t *testing.T, want, got string) {
	w, _ := describe(t, want)
	g, _ := describe(t, got)
	if len(w) != len(g) {
		t.Errorf("%d entries, want %d", len(g), len(w))
	}
	for rel, wi := range w {
		gi := g[rel]
		if wi.Type != gi.Type || wi.Sum != gi.Sum || wi.Target != gi.Target || wi.Mode != gi.Mode {
			t.Errorf("%s: got %+v, want %+v", rel, gi, wi)
		}
	}
}
