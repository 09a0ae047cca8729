package initd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"

	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/mounts"
	"github.com/ddinit/ddinit/timeline"
	"github.com/sirupsen/logrus"
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

// drivesMessage is what ddinit run tells PID 1: the drives the distro has
// now, and a cloned mount tree (passed alongside) for each of Attach; or,
// alone in a message, how the DNS forwarder it serves fares (for /status).
type drivesMessage struct {
	Drives []mounts.Drive    `json:"drives"`
	Attach []string          `json:"attach"`
	DNS    *control.DNSState `json:"dns,omitempty"`
	// Engine asks PID 1 to stop the engine if idle, or to wake it.
	Engine *engineRequest `json:"engine,omitempty"`
	// PackReply answers a pack request PID 1 passed on.
	PackReply *packReply `json:"packReply,omitempty"`
	// Marks are ddinit run's events for the boot's timeline.
	Marks []timeline.Mark `json:"marks,omitempty"`
	// Replace asks PID 1 to shut down because ddinit run replaces it (a
	// live version-pack switch), and says why.
	Replace string `json:"replace,omitempty"`
}

// socketPair returns the two ends of a SOCK_SEQPACKET pair: messages keep
// their bounds, and descriptors travel with them.
func socketPair() (*os.File, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socket pair: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "drives"), os.NewFile(uintptr(fds[1]), "drives"), nil
}

func unixConn(f *os.File) (*net.UnixConn, error) {
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	return c.(*net.UnixConn), nil
}

// sendDrives (ddinit run) follows the drives under the automount root and
// sends each change to PID 1, starting with the whole list: PID 1 bound
// the automount root a moment ago, and drives may have come and gone
// since.
func (l *launcher) sendDrives(ctx context.Context, conn *net.UnixConn) {
	root := l.cfg.AutomountRoot
	log := l.log.WithField("component", "drives")
	if _, err := os.Stat(root); err != nil {
		return
	}
	send := func(now []mounts.Drive, added []mounts.Drive) {
		msg := drivesMessage{Drives: now}
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
		var fds []int
		for _, f := range files {
			fds = append(fds, int(f.Fd()))
		}
		b, _ := json.Marshal(msg)
		var oob []byte
		if len(fds) > 0 {
			oob = unix.UnixRights(fds...)
		}
		if _, _, err := conn.WriteMsgUnix(b, oob, nil); err != nil {
			log.WithError(err).Warn("drive change not passed to PID 1")
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

// followDrives (PID 1) applies what sendDrives reports until the socket
// closes.
func (in *pid1) followDrives(conn *net.UnixConn) {
	defer conn.Close()
	log := in.log.WithField("component", "drives")
	buf, oob := make([]byte, 64<<10), make([]byte, unix.CmsgSpace(26*4))
	for {
		n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
		if err != nil || n == 0 {
			return
		}
		var files []*os.File
		if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, m := range msgs {
				if fds, err := unix.ParseUnixRights(&m); err == nil {
					for _, fd := range fds {
						files = append(files, os.NewFile(uintptr(fd), "drive"))
					}
				}
			}
		}
		var msg drivesMessage
		if err := json.Unmarshal(buf[:n], &msg); err == nil && msg.PackReply != nil {
			in.packCalls.answered(msg.PackReply.ID, *msg.PackReply)
		} else if err == nil && msg.Replace != "" {
			in.beReplaced(msg.Replace)
		} else if err == nil && msg.Marks != nil {
			in.addMarks(msg.Marks)
		} else if err == nil && msg.Engine != nil {
			go in.answerEngine(*msg.Engine) // a wake takes seconds: drives keep coming
		} else if err == nil && msg.DNS != nil {
			in.mu.Lock()
			in.dns = msg.DNS
			in.mu.Unlock()
		} else if err != nil || len(msg.Attach) != len(files) {
			log.WithField("error", fmt.Sprint(err)).Warn("a garbled drive change from ddinit run")
		} else {
			in.applyDrives(msg, files, log)
		}
		for _, f := range files {
			f.Close()
		}
	}
}

func (in *pid1) applyDrives(msg drivesMessage, trees []*os.File, log *logrus.Entry) {
	have := map[string]bool{}
	for _, d := range msg.Drives {
		have[d.Letter] = true
	}
	for i, letter := range msg.Attach {
		attached, err := mounts.AttachDrive(trees[i], letter)
		if err != nil {
			log.WithError(err).Warn("drive not attached")
		} else if attached {
			log.WithField("drive", letter).Info("drive attached")
		}
	}
	// Drives the distro no longer has: their copies here go too.
	if table, err := mounts.ReadMountinfo("/proc/self/mountinfo"); err == nil {
		for _, m := range table {
			if filepath.Dir(m.Point) == mounts.DrivesTarget && !have[filepath.Base(m.Point)] {
				if err := mounts.DetachDrive(filepath.Base(m.Point)); err != nil {
					log.WithError(err).Warn("drive not detached")
				} else {
					log.WithField("drive", filepath.Base(m.Point)).Info("drive detached")
				}
			}
		}
	}
	in.setDrives(msg.Drives)
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
