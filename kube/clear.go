package kube

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// netnsDir is where the CRI pins its pods' network namespaces.
const netnsDir = "/run/netns"

// ClearPodNamespaces removes the network namespaces the CRI pinned for
// pods that no longer run (their containers were removed with the
// cluster): each a bind mount of a namespace file, named cni-….
func ClearPodNamespaces() error {
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("pods' network namespaces: %w", err)
	}
	var errs []error
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "cni-") {
			continue
		}
		p := filepath.Join(netnsDir, e.Name())
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
			continue
		}
		if err := os.Remove(p); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// ClearState removes the cluster's state (etcd's data, the PKI, the
// configuration and kubelet's folder's content): `ddinit kubernetes
// reset`. The cluster must be stopped.
func (c *Cluster) ClearState(kubeletDir string) error {
	var errs []error
	for _, d := range []string{c.etcdDir(), c.pkiDir(), c.configDir(), filepath.Join(c.RunDir, "ipam")} {
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, fmt.Errorf("kubernetes reset: %w", err))
		}
	}
	// kubelet's folder is a mount point (the data store's); what is in it
	// goes. Volumes still mounted in it (a pod's, when kubelet was killed)
	// are unmounted first.
	entries, err := os.ReadDir(kubeletDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("kubernetes reset: %w", err))
	}
	unmountBelow(kubeletDir)
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(kubeletDir, e.Name())); err != nil {
			errs = append(errs, fmt.Errorf("kubernetes reset: %w", err))
		}
	}
	return errors.Join(errs...)
}

// unmountBelow detaches every mount below dir (not dir itself), deepest
// first.
func unmountBelow(dir string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var below []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			below = append(below, f[4])
		}
	}
	for i := len(below) - 1; i >= 0; i-- {
		unix.Unmount(below[i], unix.MNT_DETACH)
	}
}
