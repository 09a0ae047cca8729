package dnsforward

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/ddinit/ddinit/regularfile"
	"github.com/sirupsen/logrus"
)

// The resolver file is looked at (a stat, and a read when it changed) by
// one goroutine at a time, never by a query itself: the file may be on a
// file system that stopped answering (9p to a Windows that hangs), and a
// stat or a read there blocks in the kernel for as long as it likes. A
// query that arrives while a look is in flight waits for the next one (so
// it sees a change made before it came), at most lookWait; a look that
// outlived that is known stuck, and later queries do not wait for it at
// all: they use the last reading, or fail naming the stuck file system
// when there never was one. When the stuck look ends, the next query
// starts another.
const (
	// lookWait bounds how long a query (or Stats) waits for a look: a
	// stat on a local file takes microseconds, on a 9p drive about a
	// millisecond, a read a few; a slower look finishes in the background
	// and the next query has its reading.
	lookWait = 50 * time.Millisecond
	// lookReadTimeout bounds the open and the read of one look; the
	// descriptor of one that outlives it is left to regularfile.
	lookReadTimeout = 2 * time.Second
	// retryTimedOut is how soon a read that timed out is tried again when
	// the file seems unchanged: each try may leave one blocked read
	// behind.
	retryTimedOut = 10 * time.Second
)

// maxConfBytes bounds how much of a resolver file is read (a real one is
// a few hundred bytes).
const maxConfBytes = 64 << 10

// ReadFile reads a resolver file as the forwarder does: a regular file
// only (a FIFO, a socket, a device, a directory is an error naming what
// it is, never waited on), at most 64 KB, within 2 s.
func ReadFile(path string) ([]byte, error) {
	return regularfile.ReadWithin(path, maxConfBytes, lookReadTimeout)
}

// fileID tells one version of a file from another without reading it.
type fileID struct {
	dev, ino uint64
	size     int64
	mtime    int64
	ctime    int64
	mode     uint32
	statErr  syscall.Errno // the stat failed: 0 when it did not
	statFail bool
}

func statFile(path string) fileID {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		errno, _ := err.(syscall.Errno)
		return fileID{statErr: errno, statFail: true}
	}
	return fileID{dev: st.Dev, ino: st.Ino, size: st.Size, mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano(), mode: st.Mode}
}

// look is one look at the file: done is closed when it ended.
type look struct {
	done    chan struct{}
	started time.Time
}

// fileState is what the looks found, under Forwarder.mu.
type fileState struct {
	conf     Conf   // the reading in force: the last file that could be read
	confErr  string // why conf names no server (the file names none, or only us)
	read     bool   // conf is a reading (the file could be read once)
	seen     fileID // the version conf (or fileErr) is of
	fileErr  string // why the file could not be read at the last look ("" when it was)
	retryAt  time.Time
	looking  *look // the look in flight
	next     *look // the look to start when it ends, for queries that came meanwhile
	stuck    bool  // looking outlived lookWait
	lastGood int   // the server that answered last: asked first

	stuckLogged time.Time // when a stuck look was last logged
}

// current returns the reading in force, and why it names no server when
// it names none. It starts a look at the file, or asks for the one after
// the look in flight, and waits for it at most lookWait — not at all
// while the look in flight is known stuck.
func (f *Forwarder) current() (Conf, string) {
	f.init()
	f.mu.Lock()
	var wait *look
	switch {
	case f.file.looking == nil:
		f.file.looking = &look{done: make(chan struct{}), started: time.Now()}
		wait = f.file.looking
		go f.lookAt(wait)
	case !f.file.stuck:
		if f.file.next == nil {
			f.file.next = &look{done: make(chan struct{})}
		}
		wait = f.file.next
	}
	f.mu.Unlock()
	if wait != nil {
		select {
		case <-wait.done:
		default:
			t := time.NewTimer(lookWait)
			select {
			case <-wait.done:
			case <-t.C:
				f.markStuck()
			}
			t.Stop()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.file.conf, f.whyNoServer()
}

// markStuck records that the look in flight outlived lookWait. One still
// in flight a second after it began is logged (at most once a minute: a
// file system that keeps hanging would fill the log); a slow one that
// ends sooner is not.
func (f *Forwarder) markStuck() {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := &f.file
	if s.looking == nil || s.stuck {
		return
	}
	s.stuck = true
	lk := s.looking
	time.AfterFunc(time.Until(lk.started.Add(stuckLogAfter)), func() {
		f.mu.Lock()
		tell := s.looking == lk && time.Since(s.stuckLogged) >= time.Minute
		if tell {
			s.stuckLogged = time.Now()
		}
		known := len(s.conf.Servers) > 0
		f.mu.Unlock()
		if !tell {
			return
		}
		entry := f.Log.WithField("file", f.ResolvConf)
		if known {
			entry.Warn("the file system of the distro's resolver file does not answer: forwarding to the nameservers it named before until it does")
		} else {
			entry.Warn("the file system of the distro's resolver file does not answer: queries fail until it does")
		}
	})
}

// stuckLogAfter is how long a look is in flight before the log says its
// file system does not answer.
const stuckLogAfter = time.Second

// since is how long ago t was, as a message says it.
func since(t time.Time) time.Duration {
	d := time.Since(t)
	if d >= time.Second {
		return d.Round(time.Second)
	}
	return d.Round(time.Millisecond)
}

// whyNoServer says why no query can be forwarded now ("" when one can).
func (f *Forwarder) whyNoServer() string {
	s := &f.file
	switch {
	case len(s.conf.Servers) > 0:
		return ""
	case s.read && s.confErr != "":
		return s.confErr
	case s.stuck:
		return fmt.Sprintf("%s: its file system has not answered for %s, and no nameserver is known yet", f.ResolvConf, since(s.looking.started))
	case s.fileErr != "":
		return s.fileErr
	}
	return fmt.Sprintf("%s not read yet", f.ResolvConf)
}

// fileError is Stats' FileError: why the file cannot be used, or why what
// it names cannot be (empty when all is well).
func (f *Forwarder) fileError() string {
	s := &f.file
	why := s.fileErr
	if s.stuck {
		why = fmt.Sprintf("%s: its file system has not answered for %s", f.ResolvConf, since(s.looking.started))
	}
	switch {
	case why != "" && len(s.conf.Servers) > 0:
		return why + "; forwarding to the nameservers it named before"
	case why != "":
		return why
	}
	return s.confErr
}

// lookAt stats the file and reads it again when it changed; then it
// starts the next look if queries asked for one meanwhile.
func (f *Forwarder) lookAt(lk *look) {
	defer func() {
		f.mu.Lock()
		f.file.looking, f.file.stuck = f.file.next, false
		f.file.next = nil
		if f.file.looking != nil {
			f.file.looking.started = time.Now()
			go f.lookAt(f.file.looking)
		}
		f.mu.Unlock()
		close(lk.done)
	}()
	path := f.ResolvConf
	id := f.statFile(path)
	f.mu.Lock()
	unchanged := id == f.file.seen && (f.file.read || f.file.fileErr != "") && (f.file.retryAt.IsZero() || time.Now().Before(f.file.retryAt))
	f.mu.Unlock()
	if unchanged {
		return
	}
	var b []byte
	var err error
	switch {
	case id.statFail:
		err = id.statErr
	case id.mode&syscall.S_IFMT != syscall.S_IFREG:
		// Named from the stat: a socket's open fails with ENXIO, which
		// says less.
		err = fmt.Errorf("%w: it is %s", regularfile.ErrNotRegular, regularfile.Kind(id.mode))
	default:
		b, err = f.readFile(path)
	}
	if err != nil {
		f.unreadable(path, id, err)
		return
	}
	conf := ParseConf(b)
	var self []string
	conf.Servers = slices.DeleteFunc(conf.Servers, func(s netip.AddrPort) bool {
		if slices.Contains(f.Self, s.Addr()) {
			self = append(self, s.Addr().String())
			return true
		}
		return false
	})
	confErr := ""
	switch {
	case len(self) > 0 && len(conf.Servers) == 0:
		confErr = fmt.Sprintf("%s names only this forwarder (%s): a query would loop", path, strings.Join(self, " "))
	case len(conf.Servers) == 0:
		confErr = fmt.Sprintf("%s names no nameserver", path)
	}
	f.mu.Lock()
	s := &f.file
	changed := !s.read || !sameConf(s.conf, conf) || s.confErr != confErr || s.fileErr != ""
	s.conf, s.confErr, s.read, s.seen, s.fileErr, s.retryAt = conf, confErr, true, id, "", time.Time{}
	if changed {
		s.lastGood = 0
	}
	f.mu.Unlock()
	if !changed {
		return
	}
	// Sockets to servers no longer named are not kept.
	f.pool.keepOnly(conf.Servers, f.port)
	fields := logrus.Fields{"servers": strings.Trim(fmt.Sprint(conf.Servers), "[]"), "file": path}
	if confErr != "" {
		f.Log.WithFields(fields).WithField("error", confErr).Warn("the distro's resolver file gives no nameserver: queries fail until it does")
	} else {
		f.Log.WithFields(fields).Info("the distro's nameservers")
	}
	if f.OnChange != nil {
		f.OnChange(conf)
	}
}

// unreadable keeps why the file could not be read; the last reading stays
// in force (a file being replaced, or a file system that hangs, does not
// take every name away).
func (f *Forwarder) unreadable(path string, id fileID, err error) {
	why := describe(path, err)
	f.mu.Lock()
	s := &f.file
	changed := s.fileErr != why
	s.fileErr, s.seen, s.retryAt = why, id, time.Time{}
	if errors.Is(err, regularfile.ErrTimeout) {
		s.retryAt = time.Now().Add(retryTimedOut)
	}
	known := len(s.conf.Servers) > 0
	f.mu.Unlock()
	if changed {
		entry := f.Log.WithFields(logrus.Fields{"file": path, "error": why})
		if known {
			entry.Warn("the distro's resolver file cannot be read: forwarding to the nameservers it named before")
		} else {
			entry.Warn("the distro's resolver file cannot be read: queries fail until it can")
		}
	}
}

// describe is err about path, said once: "/etc/resolv.conf: not a
// regular file: it is a FIFO (named pipe)".
func describe(path string, err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return fmt.Sprintf("%s: %v", path, err)
}
