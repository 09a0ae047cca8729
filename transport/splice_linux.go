package transport

import (
	"bufio"
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// spliceChunk is the most one splice moves: the pipe's size, raised to
// this where the kernel lets a process (fs.pipe-max-size is 1 MB by
// default), so that a unix or vsock hop moves about what socat's 256 KB
// buffer does in one call.
const spliceChunk = 1 << 20

// copyStream copies src to dst until src's end or an error, as io.Copy
// does. Where both are sockets (a unix, TCP or vsock connection: a
// syscall.Conn) the bytes go from one to the other in the kernel,
// through a pipe (splice(2)), never through this process's memory; a
// socket the kernel cannot splice from (EINVAL on the first call) is
// copied through a buffer instead. Deadlines apply, as to Read and
// Write: the waits are the runtime poller's.
func copyStream(dst, src net.Conn) (int64, error) {
	n, err := CopyN(dst, src, -1)
	var we *WriteError
	if errors.As(err, &we) {
		err = we.Err
	}
	return n, err
}

// CopyN moves n bytes from src to dst (n < 0: until src's end) the way
// copyStream does: what src's reader holds read ahead first (a
// ReadAhead), the rest socket to socket in the kernel where it can. It
// returns how many bytes it took from src, and a *WriteError when the
// write side failed, so that a caller can still read off the rest of a
// message the other side no longer takes. Fewer than n bytes before
// src's end is io.ErrUnexpectedEOF.
func CopyN(dst, src net.Conn, n int64) (taken int64, err error) {
	if n == 0 {
		return 0, nil
	}
	if br, raw := readAhead(src); raw != nil {
		if k := br.Buffered(); k > 0 {
			if n >= 0 && int64(k) > n {
				k = int(n)
			}
			b, _ := br.Peek(k)
			_, werr := dst.Write(b)
			br.Discard(k)
			taken = int64(k)
			if werr != nil {
				return taken, &WriteError{Err: werr}
			}
		}
		if n >= 0 && taken == n {
			return taken, nil
		}
		src = raw
	}
	if _, raw := readAhead(dst); raw != nil {
		dst = raw // writes never went through its reader
	}
	rest := n
	if n >= 0 {
		rest = n - taken
	}
	m, err := copyConns(dst, src, rest)
	taken += m
	if err == nil && n >= 0 && taken < n {
		err = io.ErrUnexpectedEOF
	}
	return taken, err
}

// WriteError is a copy's failure on its write side.
type WriteError struct{ Err error }

func (e *WriteError) Error() string { return "write: " + e.Err.Error() }
func (e *WriteError) Unwrap() error { return e.Err }

// ReadAhead is a connection whose reader may hold bytes read ahead of
// the connection (an HTTP proxy's, before it joins an upgraded
// stream): a copy from it sends those first, then moves the rest from
// the connection itself. A nil connection says the reader's bytes do
// not lead straight to it (more sits between the two): the copy then
// reads through the connection's Read.
type ReadAhead interface {
	ReadAhead() (*bufio.Reader, net.Conn)
}

func readAhead(c net.Conn) (*bufio.Reader, net.Conn) {
	if ra, ok := c.(ReadAhead); ok {
		return ra.ReadAhead()
	}
	return nil, nil
}

// copyConns copies up to limit bytes (limit < 0: until src's end) from
// src's to dst's sockets themselves, and returns how many it took from
// src.
func copyConns(dst, src net.Conn, limit int64) (int64, error) {
	sc, ok1 := src.(syscall.Conn)
	dc, ok2 := dst.(syscall.Conn)
	if !ok1 || !ok2 {
		return copyBuffered(dst, src, limit)
	}
	rs, err1 := sc.SyscallConn()
	ws, err2 := dc.SyscallConn()
	if err1 != nil || err2 != nil {
		return copyBuffered(dst, src, limit)
	}
	p, err := getPipe()
	if err != nil {
		return copyBuffered(dst, src, limit)
	}
	n, spliced, err := splice(ws, rs, p, limit)
	if !spliced {
		// Nothing moved: the pipe is empty and can serve another copy.
		putPipe(p)
		if errors.Is(err, unix.EINVAL) {
			return copyBuffered(dst, src, limit)
		}
		return 0, err
	}
	if err == nil {
		putPipe(p) // drained: only a clean end leaves it empty for sure
	} else {
		p.close()
	}
	return n, err
}

// splice moves src's bytes to dst through p until src's end, limit
// bytes (limit < 0: no limit) or an error; taken counts the bytes read
// from src (a failed write loses what the pipe held: the copy is over);
// spliced says whether any call moved bytes (until then an EINVAL means
// the kernel cannot splice from src).
func splice(ws, rs syscall.RawConn, p *kernelPipe, limit int64) (taken int64, spliced bool, err error) {
	for limit != 0 {
		want := p.size
		if limit > 0 && limit < int64(want) {
			want = int(limit)
		}
		var n int64
		var serr error
		if err := rs.Read(func(fd uintptr) bool {
			n, serr = unix.Splice(int(fd), nil, p.w, nil, want, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
			return serr != unix.EAGAIN
		}); err != nil {
			return taken, spliced, err
		}
		if serr != nil {
			return taken, spliced, serr
		}
		if n == 0 {
			return taken, spliced, nil // src's end
		}
		spliced = true
		taken += n
		if limit > 0 {
			limit -= n
		}
		for n > 0 {
			var m int64
			var werr error
			if err := ws.Write(func(fd uintptr) bool {
				m, werr = unix.Splice(p.r, nil, int(fd), nil, int(n), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
				return werr != unix.EAGAIN
			}); err != nil {
				return taken, spliced, &WriteError{Err: err}
			}
			if werr != nil {
				return taken, spliced, &WriteError{Err: werr}
			}
			if m == 0 {
				return taken, spliced, &WriteError{Err: io.ErrShortWrite} // the pipe ran dry: cannot be
			}
			n -= m
		}
	}
	return taken, spliced, nil
}

// copyBuffered is copyConns through a buffer the size of a splice.
func copyBuffered(dst, src net.Conn, limit int64) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	var r io.Reader = src
	if limit >= 0 {
		r = io.LimitReader(src, limit)
	}
	w := &writeSide{w: dst}
	n, err := io.CopyBuffer(w, struct{ io.Reader }{r}, *bp)
	if w.err != nil {
		// n counts what was written; what the buffer held was taken too.
		return n + w.lost, &WriteError{Err: w.err}
	}
	return n, err
}

// writeSide tells a copy's failed write from a failed read.
type writeSide struct {
	w    io.Writer
	err  error
	lost int64 // what the failed write did not write
}

func (s *writeSide) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	if err != nil {
		s.err, s.lost = err, int64(len(p)-n)
	}
	return n, err
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// kernelPipe is a kernel pipe for splice: its read and write ends, and how
// much it holds.
type kernelPipe struct {
	r, w    int
	size    int
	cleanup runtime.Cleanup // closes both ends once the pipe is dropped
}

// close closes a pipe that may hold bytes (a copy that failed half way):
// it must not serve another.
func (p *kernelPipe) close() {
	p.cleanup.Stop()
	unix.Close(p.r)
	unix.Close(p.w)
}

// pipes keeps empty pipes for the next copy: making one is three
// syscalls. A pipe the pool drops is closed by its cleanup.
var pipes sync.Pool

func getPipe() (*kernelPipe, error) {
	if p, ok := pipes.Get().(*kernelPipe); ok {
		return p, nil
	}
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, err
	}
	p := &kernelPipe{r: fds[0], w: fds[1], size: 64 << 10}
	p.cleanup = runtime.AddCleanup(p, func(fds [2]int) {
		unix.Close(fds[0])
		unix.Close(fds[1])
	}, fds)
	if size, err := unix.FcntlInt(uintptr(p.w), unix.F_SETPIPE_SZ, spliceChunk); err == nil {
		p.size = size
	}
	return p, nil
}

func putPipe(p *kernelPipe) {
	pipes.Put(p)
}
