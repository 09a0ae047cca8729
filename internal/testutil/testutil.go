package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// RootEnv opts the tests that need root in: DDINIT_TEST_ROOT=1 (make test
// sets it; make unit does not).
const RootEnv = "DDINIT_TEST_ROOT"

// RequiresRoot skips t unless root-only tests are opted in (RootEnv), and
// fails it when they are but the test does not run as root.
func RequiresRoot(t testing.TB) {
	t.Helper()
	if os.Getenv(RootEnv) != "1" {
		t.Skipf("needs root (mounts, namespaces, devices or the real engine): set %s=1 as root (make test does)", RootEnv)
	}
	if os.Geteuid() != 0 {
		t.Fatalf("%s=1 but the tests do not run as root", RootEnv)
	}
}

// RequireTool returns the path of tool, failing t when it is not
// installed: the suite needs it (make deps installs it).
func RequireTool(t testing.TB, tool string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		t.Fatalf("%s is not installed (make deps installs it): the suite needs it", tool)
	}
	return p
}

// XorrisoImage fills a fresh source tree with populate and writes it as
// an ISO image with xorriso -as mkisofs and args; it returns the image's
// bytes.
func XorrisoImage(t testing.TB, populate func(src string), args ...string) []byte {
	t.Helper()
	_, b := XorrisoTree(t, populate, args...)
	return b
}

// XorrisoTree is XorrisoImage that also returns the source tree.
func XorrisoTree(t testing.TB, populate func(src string), args ...string) (src string, image []byte) {
	t.Helper()
	RequireTool(t, "xorriso")
	dir := t.TempDir()
	src = filepath.Join(dir, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	populate(src)
	out := filepath.Join(dir, "image.iso")
	cmd := exec.Command("xorriso", append(append([]string{"-as", "mkisofs"}, args...), "-o", out, src)...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("xorriso: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return src, b
}

// mountNSEnv names the test a child process of InWSLMounts runs.
const mountNSEnv = "DDINIT_TEST_IN_MOUNT_NS"

// InWSLMounts runs the calling test again in a child process of a mount
// namespace of its own, mounted as WSL is: / not shared, and a tmpfs
// every distro shares, MS_SHARED. In the child it returns that tmpfs; in
// the parent it reports how the child did and returns "" (the caller
// returns then).
func InWSLMounts(t *testing.T) string {
	t.Helper()
	RequiresRoot(t)
	if os.Getenv(mountNSEnv) != t.Name() {
		cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), mountNSEnv+"="+t.Name())
		cmd.SysProcAttr = &unix.SysProcAttr{Cloneflags: unix.CLONE_NEWNS}
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: "+t.Name()) {
			t.Fatalf("in a mount namespace of its own: %v\n%s", err, out)
		}
		return ""
	}
	// Nothing mounted here reaches the machine's own namespace.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		t.Fatal(err)
	}
	shared := filepath.Join(t.TempDir(), "wsl")
	os.Mkdir(shared, 0o755)
	if err := unix.Mount("tmpfs", shared, "tmpfs", 0, "size=8m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(shared, unix.MNT_DETACH) })
	if err := unix.Mount("", shared, "", unix.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}
	return shared
}

// NewNetns makes a network namespace with its loopback up, without
// moving the test into it, and returns its handle and a path to it that
// another process can open too; it goes when the test ends. The test
// skips without root or where no namespace can be made.
func NewNetns(t testing.TB) (netns.NsHandle, string) {
	t.Helper()
	RequiresRoot(t)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.New()
	if err != nil {
		t.Skipf("cannot make a network namespace: %v", err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			panic(err) // a thread left in the test's namespace must not serve others
		}
	}()
	t.Cleanup(func() { ns.Close() })
	lo, err := netlink.LinkByName("lo")
	if err == nil {
		err = netlink.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatalf("loopback up in the new namespace: %v", err)
	}
	return ns, fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(ns))
}
