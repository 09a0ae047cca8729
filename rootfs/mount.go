package rootfs

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ddinit/ddinit/mounts"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// KernelHasFilesystem reports whether /proc/filesystems lists fstype.
func KernelHasFilesystem(fstype string) bool {
	f, err := os.Open("/proc/filesystems")
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) > 0 && fields[len(fields)-1] == fstype {
			return true
		}
	}
	return false
}

// LoopMount attaches image to a free loop device, read-only and cleared
// automatically when unmounted, and mounts it at target.
func LoopMount(image, target, fstype string) error {
	img, err := openImage(image)
	if err != nil {
		return fmt.Errorf("loop mount %s: %w", image, err)
	}
	defer img.Close()
	loop, dev, err := attachLoop(img)
	if err != nil {
		return fmt.Errorf("loop mount %s: %w", image, err)
	}
	// With LO_FLAGS_AUTOCLEAR the device detaches once it is unmounted and
	// this descriptor is closed, so nothing has to track it.
	defer loop.Close()
	if err := unix.Mount(dev, target, fstype, unix.MS_RDONLY|unix.MS_NODEV|unix.MS_NOSUID, ""); err != nil {
		return fmt.Errorf("mount %s (%s on %s) at %s: %w", fstype, image, dev, target, err)
	}
	return nil
}

func attachLoop(img *os.File) (*os.File, string, error) {
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return nil, "", err
	}
	defer ctl.Close()
	for attempt := 0; attempt < 16; attempt++ {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, "", fmt.Errorf("find a free loop device: %w", err)
		}
		dev := fmt.Sprintf("/dev/loop%d", n)
		if _, err := os.Stat(dev); errors.Is(err, os.ErrNotExist) {
			// A private /dev may lack the node the kernel just made.
			if err := unix.Mknod(dev, unix.S_IFBLK|0o660, int(unix.Mkdev(7, uint32(n)))); err != nil && !errors.Is(err, os.ErrExist) {
				return nil, "", fmt.Errorf("create %s: %w", dev, err)
			}
		}
		loop, err := os.OpenFile(dev, os.O_RDONLY, 0)
		if err != nil {
			return nil, "", err
		}
		cfg := unix.LoopConfig{Fd: uint32(img.Fd())}
		cfg.Info.Flags = unix.LO_FLAGS_READ_ONLY | unix.LO_FLAGS_AUTOCLEAR
		copy(cfg.Info.File_name[:], img.Name())
		err = unix.IoctlLoopConfigure(int(loop.Fd()), &cfg)
		if err == unix.EINVAL || err == unix.ENOTTY {
			// Kernels before 5.8 have no LOOP_CONFIGURE.
			if err = unix.IoctlSetInt(int(loop.Fd()), unix.LOOP_SET_FD, int(img.Fd())); err == nil {
				err = unix.IoctlLoopSetStatus64(int(loop.Fd()), &cfg.Info)
				if err != nil {
					unix.IoctlSetInt(int(loop.Fd()), unix.LOOP_CLR_FD, 0)
				}
			}
		}
		if err == unix.EBUSY {
			loop.Close() // another process took it first
			continue
		}
		if err != nil {
			loop.Close()
			return nil, "", fmt.Errorf("attach %s: %w", dev, err)
		}
		return loop, dev, nil
	}
	return nil, "", errors.New("no free loop device after 16 attempts")
}

// Mode chooses how images become lower layers.
type Mode string

// The ways images can become layers.
const (
	ModeAuto      Mode = "auto"      // kernel when it has iso9660, else user space
	ModeKernel    Mode = "kernel"    // loop-mount with the kernel's iso9660
	ModeUserspace Mode = "userspace" // extract with our reader
)

// PrepareOptions says what to assemble and where.
type PrepareOptions struct {
	CacheDir string   // <data-dir>/isocache
	Images   []Source // bottom layer first: base, then version pack
	RunDir   string   // private directory for loop mounts and the tmpfs upper layer
	Target   string   // where the assembled root is mounted
	Mode     Mode
	// Keep are cache entries (digests) kept though this boot does not use
	// them: the pack to roll back to.
	Keep []string
	Log  logrus.FieldLogger
}

// Root is an assembled root filesystem. Close unmounts it.
type Root struct {
	Dir     string
	Layers  []Layer
	Kernel  bool // images are loop-mounted, not extracted
	Mounts  []string
	Elapsed time.Duration
}

// Close unmounts everything Prepare mounted, newest first.
func (r *Root) Close() error {
	var errs []error
	for i := len(r.Mounts) - 1; i >= 0; i-- {
		if err := mounts.UnmountPath(r.Mounts[i], false); err != nil {
			errs = append(errs, err)
		}
	}
	r.Mounts = nil
	return errors.Join(errs...)
}

// overlayUnsafe are the characters overlayfs option parsing would split on.
const overlayUnsafe = ",:\\"

// mountOverlay assembles layers (bottom first) under an overlay at target, with a
// writable upper layer on a tmpfs under runDir. It returns the mounts made,
// in order.
func mountOverlay(lowers []string, runDir, target string) ([]string, error) {
	for _, p := range append(append([]string(nil), lowers...), runDir, target) {
		if strings.ContainsAny(p, overlayUnsafe) {
			return nil, fmt.Errorf("overlay path %q contains one of %q, which overlayfs cannot take", p, overlayUnsafe)
		}
	}
	var made []string
	fail := func(err error) ([]string, error) {
		for i := len(made) - 1; i >= 0; i-- {
			mounts.UnmountPath(made[i], false)
		}
		return nil, err
	}
	scratch := filepath.Join(runDir, "upper")
	if err := os.MkdirAll(scratch, 0o700); err != nil {
		return fail(err)
	}
	if err := unix.Mount("tmpfs", scratch, "tmpfs", unix.MS_NODEV|unix.MS_NOSUID, "mode=0755"); err != nil {
		return fail(fmt.Errorf("mount tmpfs at %s: %w", scratch, err))
	}
	made = append(made, scratch)
	upper, work := filepath.Join(scratch, "root"), filepath.Join(scratch, "work")
	for _, d := range []string{upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return fail(err)
		}
	}
	if err := os.MkdirAll(target, 0o755); err != nil {
		return fail(err)
	}
	// overlayfs stacks lowerdir left over right: the top layer comes first.
	top := make([]string, len(lowers))
	for i, l := range lowers {
		top[len(lowers)-1-i] = l
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", strings.Join(top, ":"), upper, work)
	if err := unix.Mount("overlay", target, "overlay", 0, opts); err != nil {
		return fail(fmt.Errorf("mount overlay at %s (%s): %w", target, opts, err))
	}
	return append(made, target), nil
}
