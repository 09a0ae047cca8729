package pid1

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/mounts"
	"github.com/ddinit/ddinit/wire"
	"github.com/sirupsen/logrus"
)

// followLauncher applies what ddinit run sends until the socket ends (at
// ddinit run's exit, or PID 1's finish): the distro's drives, the DNS
// forwarder's state, engine requests, pack answers, timeline marks, and
// the word that PID 1 is being replaced.
func (in *pid1) followLauncher(ctx context.Context) {
	log := in.log.WithField("component", "link")
	// Pack requests ddinit run had not answered get their answer now.
	defer in.packCalls.Abandon(func(id int64) wire.PackAnswer {
		return wire.PackAnswer{ID: id, Err: &wire.Error{Kind: "unavailable", Message: "ddinit run does not answer"}}
	})
	for ctx.Err() == nil {
		m, files, err := in.link.Receive()
		var garbled *wire.GarbledError
		switch {
		case errors.As(err, &garbled):
			log.WithError(err).Warn("a garbled message from ddinit run")
			continue
		case err != nil:
			return
		}
		switch m.Kind {
		case wire.DrivesNow:
			in.applyDrives(*m.Drives, files, log.WithField("component", "drives"))
		case wire.DNSState:
			in.mu.Lock()
			in.dns = m.DNS
			in.mu.Unlock()
		case wire.ReachState:
			in.mu.Lock()
			in.reach = m.ReachNow
			in.mu.Unlock()
		case wire.EngineRequest:
			req := *m.Request
			in.bg.Go(func(context.Context) { in.answerEngine(req) }) // a wake takes seconds: drives keep coming
		case wire.PackReply:
			in.packCalls.Answered(m.PackAnswer.ID, *m.PackAnswer)
		case wire.Marks:
			in.addMarks(m.Marks)
		case wire.Replace:
			in.beReplaced(m.Reason)
		default:
			log.WithField("kind", m.Kind).Warn("a message from ddinit run of a kind PID 1 does not take")
		}
		for _, f := range files {
			f.Close()
		}
	}
}

// applyDrives attaches the drives that came (a mount tree each) and takes
// down the copies of those the distro no longer has.
func (in *pid1) applyDrives(d wire.Drives, trees []*os.File, log *logrus.Entry) {
	have := map[string]bool{}
	for _, drive := range d.Now {
		have[drive.Letter] = true
	}
	for i, letter := range d.Attach {
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
	in.setDrives(d.Now)
}

// listDrives records, for /status, the Windows drives the automount root
// holds; they come in with its bind.
func (in *pid1) listDrives() error {
	if _, err := os.Stat(in.cfg.AutomountRoot); err != nil {
		in.log.WithField("automountRoot", in.cfg.AutomountRoot).Info("no automount root: no Windows drives")
		return nil
	}
	drives, err := mounts.Drives("/proc/self/mountinfo", in.cfg.AutomountRoot)
	if err != nil {
		return fmt.Errorf("list the Windows drives: %w", err)
	}
	in.setDrives(drives)
	in.log.WithField("drives", len(drives)).Info("Windows drives found")
	return nil
}

func (in *pid1) setDrives(drives []mounts.Drive) {
	var list []control.Drive
	for _, d := range drives {
		list = append(list, control.Drive{Letter: d.Letter, Path: d.Path, Inside: filepath.Join(mounts.DrivesTarget, d.Letter), FSType: d.FSType})
	}
	in.mu.Lock()
	in.drives = list
	in.mu.Unlock()
}
