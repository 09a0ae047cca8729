package regularfile

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"
)

// ReaderWithin reads f (opened with Open) in order, each Read bounded by
// timeout: a file too large to read whole within one bound (an image on a
// 9p drive) still cannot stall its reader for ever when the file system
// stops answering midway. Reads go through a buffer of the reader's own,
// so a read left behind never writes into the caller's; once one timed
// out, every later Read fails the same way. Closing f does not wait for
// a read left behind: the descriptor goes when it returns.
func ReaderWithin(f *os.File, timeout time.Duration) io.Reader {
	return &timedReader{f: f, timeout: timeout}
}

type timedReader struct {
	f       *os.File
	timeout time.Duration
	buf     []byte
	err     error // set once a read outlived its bound
}

type readResult struct {
	n   int
	err error
}

func (r *timedReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if cap(r.buf) < len(p) {
		r.buf = make([]byte, len(p))
	}
	buf := r.buf[:len(p)]
	done := make(chan readResult, 1) // buffered: never blocks once abandoned
	go func() {
		n, err := r.f.Read(buf)
		done <- readResult{n, err}
	}()
	t := time.NewTimer(r.timeout)
	defer t.Stop()
	select {
	case res := <-done:
		copy(p, buf[:res.n])
		return res.n, res.err
	case <-t.C:
		r.buf = nil // the read left behind still owns it
		r.err = &fs.PathError{Op: "read", Path: r.f.Name(), Err: fmt.Errorf("%w (no data for %s)", ErrTimeout, r.timeout)}
		return 0, r.err
	}
}
