package iso9660

import (
	"errors"
	"github.com/ddinit/ddinit/internal/testutil"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const (
	modeDir  = unix.S_IFDIR | 0o755
	modeFile = unix.S_IFREG | 0o644
	modeLink = unix.S_IFLNK | 0o777
)

func rrFile(id, name string, data string) *tnode {
	return &tnode{id: id, su: cat(suspPX(modeFile, 1, 0, 0, 0), suspNM(0, name)), data: []byte(data)}
}

func rrDir(id, name string, kids ...*tnode) *tnode {
	return &tnode{id: id, dir: true, su: cat(suspPX(modeDir, 2, 0, 0, 0), suspNM(0, name)), kids: kids}
}

func rrRoot(kids ...*tnode) *tbuilder {
	return &tbuilder{rr: true, root: &tnode{dir: true, su: suspPX(modeDir, 2, 0, 0, 0), kids: kids}}
}

// sandbox is a target directory with a sibling "outside" directory that
// must stay empty whatever the image does.
type sandbox struct{ target, outside string }

func newSandbox(t *testing.T) sandbox {
	base := t.TempDir()
	s := sandbox{filepath.Join(base, "target"), filepath.Join(base, "outside")}
	for _, d := range []string{s.target, s.outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func (s sandbox) assertOutsideUntouched(t *testing.T) {
	t.Helper()
	names, err := entryNames(s.outside)
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 0 {
		t.Fatalf("extraction wrote outside its target: %v", names)
	}
	// Nothing beside target and outside either.
	names, _ = entryNames(filepath.Dir(s.target))
	if len(names) != 2 {
		t.Fatalf("extraction left files beside its target: %v", names)
	}
}

// extractImage is what `ddinit iso extract` does.
func extractImage(img *File, dir string) error {
	tree, err := img.Walk()
	if err != nil {
		return err
	}
	return ExtractAtomic(img, tree, dir, ExtractOptions{})
}

func TestHostileNamesAreRefused(t *testing.T) {
	cases := []struct {
		name string
		want string
	}{
		{"..", "parent"},
		{".", "itself"},
		{"../../outside/pwned", `contains "/"`},
		{"a/b", `contains "/"`},
		{"nul\x00byte", "NUL"},
		{strings.Repeat("n", 256), "longer than 255"},
	}
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.name[:min(len(c.name), 20)], "/", "_"), func(t *testing.T) {
			s := newSandbox(t)
			b := rrRoot()
			// The name goes in a continuation area: a 256-byte NM does not
			// fit in a directory record.
			nm := suspNM(0, c.name)
			if len(nm) > 255 {
				nm = cat(suspNM(nmContinue, c.name[:200]), suspNM(0, c.name[200:]))
			}
			b.extra = [][]byte{nm}
			b.root.kids = []*tnode{{id: "A.;1", su: cat(suspPX(modeFile, 1, 0, 0, 0), suspCE(b.extraBlock(0), 0, uint32(len(nm)))), data: []byte("evil")}}
			_, img := writeImage(t, b.build(t))
			err := extractImage(img, s.target)
			if !errors.Is(err, ErrUnsafeName) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want ErrUnsafeName mentioning %q", err, c.want)
			}
			s.assertOutsideUntouched(t)
			if names, _ := entryNames(s.target); len(names) != 0 {
				t.Fatalf("target got %v", names)
			}
		})
	}
}

func TestHostileNMParentFlagIsRefused(t *testing.T) {
	s := newSandbox(t)
	f := &tnode{id: "A.;1", su: cat(suspPX(modeFile, 1, 0, 0, 0), suspNM(nmParent, "")), data: []byte("x")}
	_, img := writeImage(t, rrRoot(f).build(t))
	if err := extractImage(img, s.target); !errors.Is(err, ErrUnsafeName) {
		t.Fatalf("err = %v, want ErrUnsafeName", err)
	}
	s.assertOutsideUntouched(t)
}

// The classic tar attack: a symlink x pointing outside, then a directory x
// with a file in it, hoping the file lands behind the symlink.
func TestHostileSymlinkThenDirectoryOfTheSameName(t *testing.T) {
	s := newSandbox(t)
	link := &tnode{id: "X.;1", su: cat(suspPX(modeLink, 1, 0, 0, 0), suspNM(0, "x"), suspSL(0, slComp(slRoot, ""), slComp(0, strings.TrimPrefix(s.outside, "/"))))}
	dir := rrDir("X", "x", rrFile("PWNED.;1", "pwned", "evil"))
	_, img := writeImage(t, rrRoot(link, dir).build(t))
	err := extractImage(img, s.target)
	if !errors.Is(err, ErrUnsafeName) || !strings.Contains(err.Error(), "appears twice") {
		t.Fatalf("err = %v, want a duplicate-name refusal", err)
	}
	s.assertOutsideUntouched(t)
}

// Even a tree that skipped Walk's checks cannot write through a symlink:
// every directory is opened with RESOLVE_NO_SYMLINKS.
func TestExtractNeverFollowsASymlinkItCreated(t *testing.T) {
	s := newSandbox(t)
	_, img := writeImage(t, rrRoot().build(t))
	now := time.Unix(1_600_000_000, 0)
	tree := &Tree{Entries: []Entry{
		{Parent: -1, Type: TypeDir, Perm: 0o755, LinkTo: -1, Mtime: now},
		{Path: "x", Name: "x", Parent: 0, Type: TypeSymlink, Perm: 0o777, Target: s.outside, LinkTo: -1, Mtime: now},
		{Path: "x/pwned", Name: "pwned", Parent: 1, Type: TypeRegular, Perm: 0o644, LinkTo: -1, Mtime: now},
	}}
	for _, workers := range []int{1, 2} {
		dir := filepath.Join(s.target, "w"+string(rune('0'+workers)))
		os.Mkdir(dir, 0o755)
		if err := Extract(img, tree, dir, ExtractOptions{Workers: workers}); err == nil {
			t.Fatal("extraction through a symlink succeeded")
		}
	}
	s.assertOutsideUntouched(t)
}

func TestTruncatedImagesFailCleanly(t *testing.T) {
	full := testutil.XorrisoImage(t, func(src string) {
		os.MkdirAll(filepath.Join(src, "d/e"), 0o755)
		os.WriteFile(filepath.Join(src, "d/e/f"), []byte(strings.Repeat("data", 5000)), 0o644)
		os.Symlink(strings.Repeat("long/", 100), filepath.Join(src, "link"))
	}, "-R", "-J")
	cuts := []int{0, 100, 16 * 2048, 16*2048 + 100, 17 * 2048, len(full) / 2, len(full) - 2048, len(full) - 1}
	for _, cut := range cuts {
		s := newSandbox(t)
		_, err := openBytes(t, full[:cut])
		if err == nil {
			t.Fatalf("image cut at %d of %d opened without error", cut, len(full))
		}
		if !errors.Is(err, ErrFormat) {
			t.Fatalf("cut at %d: %v is not a format error", cut, err)
		}
		s.assertOutsideUntouched(t)
	}
	// Shrink the volume size too, so the reader gets past its first check
	// and meets the truncation deep in directories and file data.
	for cut := 18 * 2048; cut < len(full); cut += 2048 {
		b := append([]byte(nil), full[:cut]...)
		bothEndian32(b[16*2048+80:], uint32(cut/2048))
		img, err := openBytes(t, b)
		if err != nil {
			continue
		}
		s := newSandbox(t)
		done := make(chan error, 1)
		go func() { done <- extractImage(img, s.target) }()
		select {
		case <-done: // an error or, when the cut only removed padding, a tree
		case <-time.After(10 * time.Second):
			t.Fatalf("extraction of an image cut at %d hangs", cut)
		}
		s.assertOutsideUntouched(t)
	}
}

func openBytes(t *testing.T, b []byte) (*File, error) {
	path := filepath.Join(t.TempDir(), "cut.iso")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := OpenFile(path)
	if err == nil {
		t.Cleanup(func() { f.Close() })
	}
	return f, err
}

func TestExtentPastTheEndIsRefused(t *testing.T) {
	f := rrFile("BIG.;1", "big", "")
	f.override, f.extent, f.size = true, 1000, 4096
	_, img := writeImage(t, rrRoot(f).build(t))
	_, err := img.Walk()
	if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "runs past the end") {
		t.Fatalf("err = %v, want an extent past the end", err)
	}
	d := rrDir("D", "d")
	d.override, d.extent, d.size = true, 18, 1<<30
	_, img = writeImage(t, rrRoot(d).build(t))
	if _, err := img.Walk(); !errors.Is(err, ErrFormat) {
		t.Fatalf("directory of 1 GiB: err = %v, want a format error", err)
	}
}

func TestContinuationLoopIsRefused(t *testing.T) {
	b := rrRoot()
	loopBlock := b.extraBlock(0)
	b.extra = [][]byte{cat(suspNM(nmContinue, "part"), suspCE(loopBlock, 0, 28+9))}
	f := &tnode{id: "A.;1", su: cat(suspPX(modeFile, 1, 0, 0, 0), suspCE(loopBlock, 0, 28+9)), data: []byte("x")}
	b.root.kids = []*tnode{f}
	_, img := writeImage(t, b.build(t))
	_, err := img.Walk()
	if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "CE loop") {
		t.Fatalf("err = %v, want a CE loop error", err)
	}
}

func TestChildLinkLoopIsRefused(t *testing.T) {
	// A relocation placeholder whose CL points back at the root.
	placeholder := &tnode{id: "LOOP.;1", su: cat(suspPX(modeFile, 1, 0, 0, 0), suspNM(0, "loop"), suspCL(firstDirBlock))}
	_, img := writeImage(t, rrRoot(placeholder).build(t))
	done := make(chan error, 1)
	go func() { _, err := img.Walk(); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "directory loop") {
			t.Fatalf("err = %v, want a directory loop error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("CL loop hangs")
	}
}

func TestMultiExtentFile(t *testing.T) {
	part1 := strings.Repeat("A", 2048*2)
	part2 := "tail of the file"
	first := &tnode{id: "BIG.;1", flags: flagMultiExtent, su: cat(suspPX(modeFile, 1, 0, 0, 0), suspNM(0, "big")), data: []byte(part1)}
	second := &tnode{id: "BIG.;1", data: []byte(part2)}
	_, img := writeImage(t, rrRoot(first, second, rrFile("Z.;1", "z", "zz")).build(t))
	dir := filepath.Join(t.TempDir(), "out")
	if err := extractImage(img, dir); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "big"))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != part1+part2 {
		t.Fatalf("multi-extent file has %d bytes, want %d", len(got), len(part1)+len(part2))
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "z")); string(b) != "zz" {
		t.Fatalf("file after a multi-extent file reads %q", b)
	}
}

func TestUnterminatedMultiExtentIsRefused(t *testing.T) {
	first := &tnode{id: "BIG.;1", flags: flagMultiExtent, su: cat(suspPX(modeFile, 1, 0, 0, 0), suspNM(0, "big")), data: []byte("a")}
	_, img := writeImage(t, rrRoot(first).build(t))
	if _, err := img.Walk(); !errors.Is(err, ErrFormat) {
		t.Fatalf("err = %v, want a format error", err)
	}
}

func TestPlainISO9660NamesWithoutRockRidge(t *testing.T) {
	b := &tbuilder{root: &tnode{dir: true, kids: []*tnode{
		{id: "README.TXT;1", data: []byte("hello")},
		{id: "NOEXT.;1", data: []byte("x")},
		{id: "SUB", dir: true, kids: []*tnode{{id: "F.;1", data: []byte("f")}}},
	}}}
	_, img := writeImage(t, b.build(t))
	if img.Format() != "iso9660" {
		t.Fatalf("format %q, want iso9660", img.Format())
	}
	tree, err := img.Walk()
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, e := range tree.Entries[1:] {
		paths = append(paths, e.Path)
	}
	if got := strings.Join(paths, ","); got != "readme.txt,noext,sub,sub/f" {
		t.Fatalf("paths %s", got)
	}
}

func TestDeviceNumberEncodings(t *testing.T) {
	dev := func(id string, pn []byte) *tnode {
		return &tnode{id: id, su: cat(suspPX(unix.S_IFCHR|0o600, 1, 0, 0, 0), suspNM(0, strings.ToLower(id[:1])), pn)}
	}
	// Whole dev_t in the low word (libisofs) and major/minor apart.
	_, img := writeImage(t, rrRoot(dev("A", suspPN(0, uint32(unix.Mkdev(300, 70000)))), dev("B", suspPN(8, 1))).build(t))
	tree, err := img.Walk()
	if err != nil {
		t.Fatal(err)
	}
	a, b := tree.Entries[1].Rdev, tree.Entries[2].Rdev
	if unix.Major(a) != 300 || unix.Minor(a) != 70000 || unix.Major(b) != 8 || unix.Minor(b) != 1 {
		t.Fatalf("devices %d:%d and %d:%d", unix.Major(a), unix.Minor(a), unix.Major(b), unix.Minor(b))
	}
}

// entryNames lists the names in dir.
func entryNames(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names, err
}
