package launcher

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"

	"github.com/ddinit/ddinit/mounts"
	"github.com/ddinit/ddinit/wire"
	"golang.org/x/sys/unix"
)

// Drives and devices follow the distro. WSL's root is not a shared mount,
// so a drive mounted under the automount root after the boot does not
// propagate into the namespace by itself: ddinit run, in the distro,
// watches the mount table, clones each new drive's mount (open_tree) and
// hands it to PID 1 over a socket, which attaches it (move_mount) and
// takes down drives the distro no longer has. Device nodes are mirrored
// into the namespace's own /dev the same way, from an inotify watch of
// the distro's.

// sendDrives (ddinit run) follows the drives under the automount root and
// sends each change to PID 1, starting with the whole list: PID 1 bound
// the automount root a moment ago, and drives may have come and gone
// since.
func (l *launcher) sendDrives(ctx context.Context) {
	root := l.cfg.AutomountRoot
	log := l.log.WithField("component", "drives")
	if _, err := os.Stat(root); err != nil {
		return
	}
	send := func(now []mounts.Drive, added []mounts.Drive) {
		msg := wire.Drives{Now: now}
		var files []*os.File
		for _, d := range added {
			f, err := mounts.CloneDrive(d.Path)
			if err != nil {
				log.WithError(err).WithField("drive", d.Letter).Warn("drive not brought into the namespace")
				continue
			}
			files = append(files, f)
			msg.Attach = append(msg.Attach, d.Letter)
		}
		defer func() {
			for _, f := range files {
				f.Close()
			}
		}()
		if !l.tellPID1(wire.Message{Kind: wire.DrivesNow, Drives: &msg}, files...) {
			log.Warn("drive change not passed to PID 1")
		}
	}
	initial, err := mounts.Drives("/proc/self/mountinfo", root)
	if err != nil {
		log.WithError(err).Warn("drives are not followed")
		return
	}
	send(initial, initial)
	err = mounts.WatchDrives(ctx, root, initial, func(now []mounts.Drive) {
		var added []mounts.Drive
		for _, d := range now {
			if !slices.Contains(initial, d) {
				added = append(added, d)
			}
		}
		initial = now
		log.WithField("drives", len(now)).Info("the distro's drives changed")
		send(now, added)
	})
	if err != nil {
		log.WithError(err).Warn("drives are no longer followed")
	}
}

// mirrorDevices (ddinit run) keeps PID 1's /dev following the distro's.
func (l *launcher) mirrorDevices(ctx context.Context, pid int) {
	log := l.log.WithField("component", "devices")
	dst := fmt.Sprintf("/proc/%d/root/dev", pid)
	// PID 1 gone (ESRCH) is the end of the boot, not a fault.
	if err := mounts.WatchDevices(ctx, "/dev", dst, log); err != nil && !errors.Is(err, unix.ESRCH) {
		log.WithError(err).Warn("devices are not followed")
	}
}

// follow starts keeping PID 1's drives and devices in step with the
// distro's, and returns how to stop (and wait for) that.
func (l *launcher) follow(pid int) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); l.sendDrives(ctx) }()
	go func() { defer wg.Done(); l.mirrorDevices(ctx, pid) }()
	return func() { cancel(); wg.Wait() }
}
