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
	var ahead int64
	if ra, ok := src.(ReadAhead); ok {
		br, raw := ra.ReadAhead()
		if n := br.Buffered(); n > 0 {
			b, _ := br.Peek(n)
			if _, err := dst.Write(b); err != nil {
				return 0, err
			}
			br.Discard(n)
			ahead = int64(n)
		}
		src = raw
	}
	if ra, ok := dst.(ReadAhead); ok {
		_, dst = ra.ReadAhead() // writes never went through its reader
	}
	n, err := copyConns(dst, src)
	return ahead + n, err
}

// ReadAhead is a connection whose reader may hold bytes read ahead of
// the connection (an HTTP proxy's, before it joins an upgraded
// stream): a copy from it sends those first, then moves the rest from
// the connection itself.
type ReadAhead interface {
	ReadAhead() (*bufio.Reader, net.Conn)
}

// copyConns is copyStream from src's and to dst's sockets themselves.
func copyConns(dst, src net.Conn) (int64, error) {
	sc, ok1 := src.(syscall.Conn)
	dc, ok2 := dst.(syscall.Conn)
	if !ok1 || !ok2 {
		return copyBuffered(dst, src)
	}
	rs, err1 := sc.SyscallConn()
	ws, err2 := dc.SyscallConn()
	if err1 != nil || err2 != nil {
		return copyBuffered(dst, src)
	}
	p, err := getPipe()
	if err != nil {
		return copyBuffered(dst, src)
	}
	n, spliced, err := splice(ws, rs, p)
	if !spliced {
		// Nothing moved: the pipe is empty and can serve another copy.
		putPipe(p)
		if errors.Is(err, unix.EINVAL) {
			return copyBuffered(dst, src)
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

// splice moves src's bytes to dst through p until src's end or an
// error; spliced says whether any call moved bytes (until then an
// EINVAL means the kernel cannot splice from src).
func splice(ws, rs syscall.RawConn, p *kernelPipe) (total int64, spliced bool, err error) {
	for {
		var n int64
		var serr error
		if err := rs.Read(func(fd uintptr) bool {
			n, serr = unix.Splice(int(fd), nil, p.w, nil, p.size, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
			return serr != unix.EAGAIN
		}); err != nil {
			return total, spliced, err
		}
		if serr != nil {
			return total, spliced, serr
		}
		if n == 0 {
			return total, spliced, nil // src's end
		}
		spliced = true
		for n > 0 {
			var m int64
			var werr error
			if err := ws.Write(func(fd uintptr) bool {
				m, werr = unix.Splice(p.r, nil, int(fd), nil, int(n), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
				return werr != unix.EAGAIN
			}); err != nil {
				return total, spliced, err
			}
			if werr != nil {
				return total, spliced, werr
			}
			if m == 0 {
				return total, spliced, io.ErrShortWrite // the pipe ran dry: cannot be
			}
			n -= m
			total += m
		}
	}
}

// copyBuffered is io.Copy with a buffer the size of a splice.
func copyBuffered(dst, src net.Conn) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	return io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, *bp)
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
