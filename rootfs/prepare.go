package rootfs

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/sirupsen/logrus"
)

// Prepare verifies and caches every image, turns each into a read-only
// lower layer (a loop mount with the kernel's iso9660, or an extracted tree)
// and mounts the overlay at opts.Target. On error nothing stays mounted.
func Prepare(opts PrepareOptions) (*Root, error) {
	start := time.Now()
	log := opts.Log
	if log == nil {
		log = logrus.StandardLogger()
	}
	kernel, err := chooseKernelPath(opts.Mode)
	if err != nil {
		return nil, err
	}
	cache, err := OpenCache(opts.CacheDir, log)
	if err != nil {
		return nil, err
	}
	defer cache.Close()
	root := &Root{Dir: opts.Target, Kernel: kernel}
	var digests, lowers []string
	for _, src := range opts.Images {
		l, err := cache.Ensure(src, !kernel)
		if err != nil {
			return nil, err
		}
		root.Layers = append(root.Layers, l)
		digests = append(digests, l.Digest)
		if !kernel {
			lowers = append(lowers, l.Tree)
			continue
		}
		mnt := filepath.Join(opts.RunDir, "layers", l.Digest[:12])
		if err := os.MkdirAll(mnt, 0o755); err != nil {
			root.Close()
			return nil, err
		}
		if err := LoopMount(l.Image, mnt, "iso9660"); err != nil {
			root.Close()
			return nil, fmt.Errorf("%s image: %w", src.Name, err)
		}
		root.Mounts = append(root.Mounts, mnt)
		lowers = append(lowers, mnt)
	}
	if err := cache.Collect(digests, opts.Keep...); err != nil {
		// Old entries only cost disk space: boot anyway.
		log.WithError(err).Warn("image cache collection failed")
	}
	mounts, err := mountOverlay(lowers, opts.RunDir, opts.Target)
	if err != nil {
		root.Close()
		return nil, err
	}
	root.Mounts = append(root.Mounts, mounts...)
	root.Elapsed = time.Since(start)
	return root, nil
}

func chooseKernelPath(mode Mode) (bool, error) {
	switch mode {
	case ModeAuto, "":
		return KernelHasFilesystem("iso9660"), nil
	case ModeUserspace:
		return false, nil
	case ModeKernel:
		if !KernelHasFilesystem("iso9660") {
			return false, fmt.Errorf("the kernel path was asked for but /proc/filesystems does not list iso9660 (load the isofs module or use the userspace mode)")
		}
		return true, nil
	}
	return false, fmt.Errorf("unknown image mode %q (want auto, kernel or userspace)", mode)
}
