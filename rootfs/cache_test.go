package rootfs

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"github.com/ddinit/ddinit/internal/testutil"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ddinit/ddinit/mounts"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
)

// testImage writes an image of files (path -> content) with its sidecar
// and returns its path and digest.
func testImage(t testing.TB, dir, name string, files map[string]string) (string, string) {
	t.Helper()
	b := testutil.XorrisoImage(t, func(src string) {
		for p, c := range files {
			full := filepath.Join(src, p)
			os.MkdirAll(filepath.Dir(full), 0o755)
			if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}, "-R", "-J")
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	digest := hex.EncodeToString(sum[:])
	if err := os.WriteFile(path+SidecarSuffix, []byte(digest+"  "+name+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, digest
}

func quietLog() *logrus.Logger {
	l, _ := test.NewNullLogger()
	return l
}

func openTestCache(t *testing.T, dir string) *Cache {
	t.Helper()
	c, err := OpenCache(dir, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestCacheColdThenWarm(t *testing.T) {
	dir := t.TempDir()
	img, digest := testImage(t, dir, "base.iso", map[string]string{"etc/hostname": "docker-desktop\n"})
	cacheDir := filepath.Join(dir, "data", "isocache")

	c := openTestCache(t, cacheDir)
	cold, err := c.Ensure(Source{Name: "base", Path: img}, true)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(img)
	if cold.CacheHit || cold.Hashed != st.Size() || !cold.Extracted || cold.Digest != digest {
		t.Fatalf("cold: %+v, want a miss that hashed %d bytes and extracted", cold, st.Size())
	}
	if b, err := os.ReadFile(filepath.Join(cold.Tree, "etc/hostname")); err != nil || string(b) != "docker-desktop\n" {
		t.Fatalf("extracted tree: %q %v", b, err)
	}
	c.Close()

	// A warm boot trusts the sidecar naming a complete entry: it must not
	// read the slow source at all, so garbage there goes unnoticed.
	if err := os.WriteFile(img, []byte("not read on a warm boot"), 0o644); err != nil {
		t.Fatal(err)
	}
	c = openTestCache(t, cacheDir)
	warm, err := c.Ensure(Source{Name: "base", Path: img}, true)
	if err != nil {
		t.Fatal(err)
	}
	if !warm.CacheHit || warm.Hashed != 0 || warm.Extracted || warm.Tree != cold.Tree {
		t.Fatalf("warm: %+v, want a hit with no hashing or extraction", warm)
	}
}

func TestCacheDigestMismatchNamesEverything(t *testing.T) {
	dir := t.TempDir()
	img, digest := testImage(t, dir, "docker.iso", map[string]string{"a": "b"})
	wrong := strings.Repeat("ab", 32)
	os.WriteFile(img+SidecarSuffix, []byte(wrong+"  docker.iso\n"), 0o644)
	cacheDir := filepath.Join(dir, "isocache")
	c := openTestCache(t, cacheDir)
	_, err := c.Ensure(Source{Name: "version pack", Path: img}, true)
	var mm *DigestMismatchError
	if !errors.As(err, &mm) {
		t.Fatalf("err = %v, want a DigestMismatchError", err)
	}
	for _, want := range []string{img, wrong, digest, "version pack"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	names, _ := readDirNames(cacheDir)
	for _, n := range names {
		if n != lockFile {
			t.Errorf("a failed verification left %s in the cache", n)
		}
	}
}

func TestCacheConfiguredDigestAndMissingSidecar(t *testing.T) {
	dir := t.TempDir()
	img, digest := testImage(t, dir, "docker.iso", map[string]string{"a": "b"})
	os.Remove(img + SidecarSuffix)
	c := openTestCache(t, filepath.Join(dir, "isocache"))
	_, err := c.Ensure(Source{Name: "version pack", Path: img}, false)
	if err == nil || !strings.Contains(err.Error(), ".sha256 is missing") {
		t.Fatalf("err = %v, want the missing sidecar named", err)
	}
	l, err := c.Ensure(Source{Name: "version pack", Path: img, Digest: "sha256:" + strings.ToUpper(digest)}, false)
	if err != nil || l.Digest != digest || l.Tree != "" {
		t.Fatalf("configured digest: %+v %v", l, err)
	}
	if _, err := c.Ensure(Source{Name: "version pack", Path: img, Digest: "sha256:1234"}, false); err == nil || !strings.Contains(err.Error(), "not a sha256 digest") {
		t.Fatalf("bad configured digest: %v", err)
	}
}

func TestCacheRedoesWhatACrashLeft(t *testing.T) {
	dir := t.TempDir()
	img, digest := testImage(t, dir, "base.iso", map[string]string{"f": "content"})
	cacheDir := filepath.Join(dir, "isocache")
	// A crash mid-copy (a partial entry), a crash after the rename but with
	// a lost entry.json, and a crash mid-extraction.
	os.MkdirAll(filepath.Join(cacheDir, ".partial-"+digest[:12]+"-123"), 0o755)
	entry := filepath.Join(cacheDir, digest)
	os.MkdirAll(entry, 0o755)
	os.WriteFile(filepath.Join(entry, entryImage), []byte("half an image"), 0o644)
	c := openTestCache(t, cacheDir)
	if names, _ := readDirNames(cacheDir); strings.Contains(strings.Join(names, " "), partialPrefix) {
		t.Fatalf("partial entries survived OpenCache: %v", names)
	}
	l, err := c.Ensure(Source{Name: "base", Path: img}, false)
	if err != nil || l.CacheHit {
		t.Fatalf("incomplete entry: %+v %v, want a rebuild", l, err)
	}
	os.MkdirAll(filepath.Join(entry, ".rootfs.partial-999/half"), 0o755)
	l, err = c.Ensure(Source{Name: "base", Path: img}, true)
	if err != nil || !l.Extracted {
		t.Fatalf("missing tree: %+v %v", l, err)
	}
	if b, _ := os.ReadFile(filepath.Join(l.Tree, "f")); string(b) != "content" {
		t.Fatalf("tree content %q", b)
	}
	if names, _ := readDirNames(entry); strings.Contains(strings.Join(names, " "), "partial") {
		t.Fatalf("partial tree survived: %v", names)
	}
}

func TestCacheCollectKeepsCurrentAndPrevious(t *testing.T) {
	dir := t.TempDir()
	cacheDir := filepath.Join(dir, "isocache")
	c := openTestCache(t, cacheDir)
	var digests []string
	for i, content := range []string{"one", "two", "three"} {
		img, d := testImage(t, dir, content+".iso", map[string]string{"v": content})
		if _, err := c.Ensure(Source{Name: "pack", Path: img}, false); err != nil {
			t.Fatal(err)
		}
		if err := c.Collect([]string{d}); err != nil {
			t.Fatal(err)
		}
		digests = append(digests, d)
		if i == 1 {
			// The same boot again changes nothing.
			if err := c.Collect([]string{d}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i, d := range digests {
		_, err := os.Stat(filepath.Join(cacheDir, d))
		if kept := err == nil; kept != (i > 0) {
			t.Errorf("entry %d (%s): kept=%v", i, d[:12], kept)
		}
	}
}

func TestCacheIsLocked(t *testing.T) {
	dir := t.TempDir()
	openTestCache(t, dir)
	if _, err := OpenCache(dir, quietLog()); err == nil || !strings.Contains(err.Error(), "in use by another ddinit") {
		t.Fatalf("second open: %v", err)
	}
}

// mountedUnder lists the mount points at or under dir.
func mountedUnder(t *testing.T, dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) > 4 && (fields[4] == dir || strings.HasPrefix(fields[4], dir+"/")) {
			out = append(out, fields[4])
		}
	}
	return out
}

func TestPrepareAssemblesAnOverlay(t *testing.T) {
	testutil.RequiresRoot(t)
	dir := t.TempDir()
	base, _ := testImage(t, dir, "docker-desktop.iso", map[string]string{"etc/os-release": "base\n", "etc/shared": "from base\n"})
	pack, _ := testImage(t, dir, "docker.iso", map[string]string{"usr/bin/dockerd": "engine\n", "etc/shared": "from pack\n"})
	opts := PrepareOptions{
		CacheDir: filepath.Join(dir, "data", "isocache"),
		Images:   []Source{{Name: "base", Path: base}, {Name: "version pack", Path: pack}},
		RunDir:   filepath.Join(dir, "run"),
		Target:   filepath.Join(dir, "run", "rootfs"),
		Mode:     ModeUserspace,
		Log:      quietLog(),
	}
	for boot := 0; boot < 2; boot++ {
		root, err := Prepare(opts)
		if err != nil {
			t.Fatal(err)
		}
		for p, want := range map[string]string{"etc/os-release": "base\n", "usr/bin/dockerd": "engine\n", "etc/shared": "from pack\n"} {
			if b, err := os.ReadFile(filepath.Join(root.Dir, p)); err != nil || string(b) != want {
				t.Errorf("boot %d: %s reads %q (%v), want %q", boot, p, b, err, want)
			}
		}
		if boot == 1 && (!root.Layers[0].CacheHit || !root.Layers[1].CacheHit) {
			t.Errorf("second boot was not a cache hit: %+v", root.Layers)
		}
		// Writes land in the tmpfs upper layer, never in the cache.
		if err := os.WriteFile(filepath.Join(root.Dir, "etc/shared"), []byte("changed"), 0o644); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(filepath.Join(root.Layers[1].Tree, "etc/shared")); string(b) != "from pack\n" {
			t.Fatalf("a write through the overlay reached the cache: %q", b)
		}
		if err := root.Close(); err != nil {
			t.Fatal(err)
		}
		if m := mountedUnder(t, dir); len(m) != 0 {
			t.Fatalf("mounts left after Close: %v", m)
		}
	}
}

func TestPrepareFailsCleanly(t *testing.T) {
	testutil.RequiresRoot(t)
	dir := t.TempDir()
	base, _ := testImage(t, dir, "docker-desktop.iso", map[string]string{"a": "a"})
	opts := PrepareOptions{
		CacheDir: filepath.Join(dir, "isocache"),
		Images:   []Source{{Name: "base", Path: base}, {Name: "version pack", Path: filepath.Join(dir, "missing.iso")}},
		RunDir:   filepath.Join(dir, "run"),
		Target:   filepath.Join(dir, "run", "rootfs"),
		Mode:     ModeUserspace,
		Log:      quietLog(),
	}
	_, err := Prepare(opts)
	if err == nil || !strings.Contains(err.Error(), "missing.iso") {
		t.Fatalf("err = %v, want the missing image named", err)
	}
	if m := mountedUnder(t, dir); len(m) != 0 {
		t.Fatalf("mounts left after a failed Prepare: %v", m)
	}
	opts.Mode = "turbo"
	if _, err := Prepare(opts); err == nil || !strings.Contains(err.Error(), "unknown image mode") {
		t.Fatalf("bad mode: %v", err)
	}
}

// The loop-device code of the kernel fast path, exercised with a file
// system this kernel has (ext4); the iso9660 mount itself runs in the qemu
// guest.
func TestLoopMountAttachesAndDetaches(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequireTool(t, "mkfs.ext4")
	dir := t.TempDir()
	content := filepath.Join(dir, "content")
	os.MkdirAll(content, 0o755)
	os.WriteFile(filepath.Join(content, "hello"), []byte("from a loop device\n"), 0o644)
	img := filepath.Join(dir, "fs.img")
	if b, err := exec.Command("mkfs.ext4", "-q", "-d", content, img, "8M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v %s", err, b)
	}
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	if err := LoopMount(img, mnt, "ext4"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(mnt, "hello"))
	if err != nil || string(b) != "from a loop device\n" {
		t.Fatalf("read through the loop mount: %q %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "w"), nil, 0o644); err == nil {
		t.Fatal("the loop mount is writable")
	}
	if !loopBacks(t, img) {
		t.Fatal("no loop device backs the image while mounted")
	}
	if err := mounts.UnmountPath(mnt, false); err != nil {
		t.Fatal(err)
	}
	if loopBacks(t, img) {
		t.Fatal("the loop device stayed attached after unmount (autoclear)")
	}
}

func loopBacks(t *testing.T, img string) bool {
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil && strings.TrimSpace(string(b)) == img {
			return true
		}
	}
	return false
}

func TestKernelISO9660Path(t *testing.T) {
	testutil.RequiresRoot(t)
	if !KernelHasFilesystem("iso9660") {
		t.Skip("this kernel has no iso9660 (not in /proc/filesystems); the qemu guest of make vm-test runs the kernel path")
	}
	dir := t.TempDir()
	base, _ := testImage(t, dir, "docker-desktop.iso", map[string]string{"etc/os-release": "base\n"})
	root, err := Prepare(PrepareOptions{
		CacheDir: filepath.Join(dir, "isocache"),
		Images:   []Source{{Name: "base", Path: base}},
		RunDir:   filepath.Join(dir, "run"),
		Target:   filepath.Join(dir, "run", "rootfs"),
		Mode:     ModeKernel,
		Log:      quietLog(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if b, err := os.ReadFile(filepath.Join(root.Dir, "etc/os-release")); err != nil || string(b) != "base\n" {
		t.Fatalf("read through the kernel path: %q %v", b, err)
	}
	if root.Layers[0].Tree != "" {
		t.Fatal("the kernel path extracted the image")
	}
}

func TestKernelModeWithoutISO9660IsAClearError(t *testing.T) {
	if KernelHasFilesystem("iso9660") {
		t.Skip("this kernel has iso9660")
	}
	_, err := chooseKernelPath(ModeKernel)
	if err == nil || !strings.Contains(err.Error(), "iso9660") {
		t.Fatalf("err = %v", err)
	}
}
