package regularfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Errors a caller may ask for with errors.Is.
var (
	// ErrNotRegular is a path that names something other than a regular
	// file (after symlinks).
	ErrNotRegular = errors.New("not a regular file")
	// ErrTooLarge is a file over the size the caller reads.
	ErrTooLarge = errors.New("larger than ddinit reads")
	// ErrTimeout is an open or a read the file system did not finish in
	// time (a hung network or 9p file system).
	ErrTimeout = errors.New("the file system did not answer in time")
)

// DefaultTimeout bounds an open or a whole read when the caller gives no
// bound of its own: a local file takes microseconds, one on a 9p drive
// milliseconds.
const DefaultTimeout = 5 * time.Second

// Open opens the regular file at path for reading (symlinks followed),
// within DefaultTimeout. Anything else — a FIFO, a socket, a device, a
// directory, a symlink loop — is an error naming what it is, and a FIFO
// is never waited on.
func Open(path string) (*os.File, error) { return OpenWithin(path, DefaultTimeout) }

// OpenWithin is Open with its own bound.
func OpenWithin(path string, timeout time.Duration) (*os.File, error) {
	type opened struct {
		f   *os.File
		err error
	}
	done := make(chan opened, 1)
	abandoned := make(chan struct{})
	openPath := openFile // read here: a test restores it while a hung open waits
	go func() {
		f, err := openPath(path)
		select {
		case done <- opened{f, err}:
		case <-abandoned:
			if f != nil {
				f.Close()
			}
		}
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case o := <-done:
		return o.f, o.err
	case <-t.C:
		close(abandoned)
		// A result that arrived at the same moment is not lost open.
		select {
		case o := <-done:
			return o.f, o.err
		default:
		}
		return nil, &fs.PathError{Op: "open", Path: path, Err: fmt.Errorf("%w (%s)", ErrTimeout, timeout)}
	}
}

func open(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	for err == unix.EINTR {
		fd, err = unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	}
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, &fs.PathError{Op: "open", Path: path, Err: fmt.Errorf("%w: it is %s", ErrNotRegular, Kind(st.Mode))}
	}
	// Reads of a regular file never wait for a writer; the flag only
	// served the open.
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// Kind names a file type (st_mode's S_IFMT bits) as an error says it.
func Kind(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "a regular file"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFIFO:
		return "a FIFO (named pipe)"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	case unix.S_IFLNK:
		return "a symbolic link"
	}
	return fmt.Sprintf("of unknown type %#o", mode&unix.S_IFMT)
}

// Read returns the whole content of the regular file at path, which must
// hold at most limit bytes, read within DefaultTimeout.
func Read(path string, limit int64) ([]byte, error) {
	return ReadWithin(path, limit, DefaultTimeout)
}

// ReadWithin is Read with its own bound on the open and the read
// together.
func ReadWithin(path string, limit int64, timeout time.Duration) ([]byte, error) {
	deadline := time.Now().Add(timeout)
	f, err := OpenWithin(path, timeout)
	if err != nil {
		return nil, err
	}
	type read struct {
		b   []byte
		err error
	}
	done := make(chan read, 1)
	go func() {
		defer f.Close()
		// Sized by the file, so that a large one (a CA bundle of 200 KB)
		// is read into one buffer rather than one grown and copied a
		// dozen times; the last read, which finds the end, needs the 512
		// bytes bytes.Buffer keeps free.
		size := int64(0)
		if st, err := f.Stat(); err == nil {
			size = max(min(st.Size(), limit), 0)
		}
		buf := bytes.NewBuffer(make([]byte, 0, size+bytes.MinRead))
		_, err := buf.ReadFrom(io.LimitReader(f, limit+1))
		done <- read{buf.Bytes(), err} // buffered: never blocks once abandoned
	}()
	t := time.NewTimer(max(time.Until(deadline), time.Millisecond))
	defer t.Stop()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, &fs.PathError{Op: "read", Path: path, Err: r.err}
		}
		if int64(len(r.b)) > limit {
			return nil, &fs.PathError{Op: "read", Path: path, Err: fmt.Errorf("%w: over %d bytes", ErrTooLarge, limit)}
		}
		return r.b, nil
	case <-t.C:
		return nil, &fs.PathError{Op: "read", Path: path, Err: fmt.Errorf("%w (%s)", ErrTimeout, timeout)}
	}
}

// openFile is open, but for tests that play a hung file system.
var openFile = open
