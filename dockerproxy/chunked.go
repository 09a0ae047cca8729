package dockerproxy

import (
	"bytes"
	"fmt"
	"io"
	"sync"
)

// A chunked body is passed on byte for byte, as it came, its framing
// followed as the bytes go by (chunkFrame) so that the body ends where it
// ends: what follows it on the connection is the next message's.

// chunkBuffer is what a chunked body's bytes gather in between the reads
// that take them and the write that passes them on.
const chunkBuffer = 256 << 10

// minChunkWrite is the least a write of a chunked body's bytes passes on
// while a chunk is still coming: smaller ones cost more in system calls
// than they gain in keeping the engine busy.
const minChunkWrite = 16 << 10

// maxChunkLine bounds a chunk-size or trailer line, CRLF included: one
// this long or longer Go's net/http server refuses.
const maxChunkLine = 4 << 10

var chunkBuffers = sync.Pool{New: func() any { b := make([]byte, chunkBuffer); return &b }}

// copyChunked copies a chunked body, trailer and all. Its bytes are read
// into one buffer, never past the body's end (chunkFrame.atLeast: what
// follows stays on the connection), and go out in one write when the
// buffer is full or the source had no more at hand: a large upload moves
// in a few large reads and writes, with no copy in between, and a
// stream's chunk still goes out at once. While the source has nothing to
// give and nothing is held, the buffer is given back (an idle event
// stream holds none). A chunk's run of spliceMin or more goes socket to
// socket in the kernel (see copyN).
func copyChunked(out *sink, from bufferedConn) error {
	var (
		bp         *[]byte
		f          chunkFrame
		n, scanned int  // bytes held; of them, those whose framing is read
		dry        bool // the last read took all the source had
	)
	defer func() {
		if bp != nil {
			chunkBuffers.Put(bp)
		}
	}()
	for {
		if bp == nil {
			// Nothing held: wait for the source without a buffer.
			if _, err := from.r.Peek(1); err != nil {
				return chunkReadError(err)
			}
			bp = chunkBuffers.Get().(*[]byte)
		}
		buf := (*bp)[:chunkBuffer]
		var err error
		scanned, err = f.scan(buf[:n], scanned)
		switch {
		case err != nil:
			// What came before the fault is passed on; the fault is not.
			out.Write(buf[:f.passable(scanned)])
			return err
		case f.done:
			_, err := out.Write(buf[:scanned])
			return err
		}
		// Held bytes go out when the buffer is full, and whenever the
		// source has no more at hand: at a chunk's end, or once they are
		// worth a write (a sender slower than the proxy, as the CLI is,
		// keeps the engine fed; one faster fills the buffer first).
		boundary := f.state == sizeLine && f.line == n
		// A read that got all it asked for can still end a stream's chunk
		// (a size line with an extension or blanks asks for less than it
		// holds): nothing left in the reader, it counts as dry there.
		dry = dry || boundary && n > 0 && from.r.Buffered() == 0
		if pass := f.passable(scanned); pass > 0 && (n == len(buf) || dry && (boundary || pass >= minChunkWrite)) {
			if _, err := out.Write(buf[:pass]); err != nil {
				return err
			}
			n = copy(buf, buf[pass:n])
			scanned -= pass
			f.line -= pass
		}
		if f.inLine() && n-f.line >= maxChunkLine {
			return fmt.Errorf("%w: a line of %d bytes or more", errBadFraming, maxChunkLine)
		}
		if f.state == chunkData && out.err == nil && !from.behind && f.left-int64(from.r.Buffered()) >= spliceMin {
			// A large chunk: what is held goes out first, its run in the kernel.
			if _, err := out.Write(buf[:n]); err != nil {
				return err
			}
			n, scanned = 0, 0
			if err := out.copyN(from, f.left); err != nil {
				return err
			}
			f.dataRead(0)
			continue
		}
		if dry && boundary && n == 0 {
			chunkBuffers.Put(bp)
			bp = nil
			dry = false
			continue
		}
		want := buf[n:min(int64(len(buf)), int64(n)+f.atLeast(buf[:n]))]
		m, err := from.r.Read(want)
		if m == 0 && err != nil {
			out.Write(buf[:f.passable(scanned)])
			return chunkReadError(err)
		}
		n += m
		// Short, and nothing left in the reader: the source had no more.
		dry = m < len(want) && from.r.Buffered() == 0
	}
}

// chunkReadError is a chunked body's source failing: ending early is
// ending unexpectedly.
func chunkReadError(err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("chunked body: %w", err)
}

type chunkState uint8

const (
	sizeLine  chunkState = iota // a chunk-size line
	chunkData                   // a chunk's bytes
	chunkEnd                    // the CRLF after a chunk's bytes
	trailer                     // a trailer line, or the blank line that ends the body
)

// chunkFrame follows a chunked body's framing over its bytes as they are
// held, and refuses framing a server could read otherwise (a bare LF, a
// stray CR, a size that is not one).
type chunkFrame struct {
	state chunkState
	left  int64 // chunkData: the chunk's bytes still to come; chunkEnd: its CRLF's
	line  int   // sizeLine, chunkEnd, trailer: where it starts in the held bytes
	done  bool  // the blank line that ends the body is read
}

func (f *chunkFrame) inLine() bool { return f.state != chunkData }

// passable is how many of the held bytes can be passed on: all that are
// read, but a line (or a chunk's CRLF) only once it is whole and sound.
func (f *chunkFrame) passable(scanned int) int {
	if f.inLine() {
		return f.line
	}
	return scanned
}

// dataRead moves past a chunk's bytes, to the CRLF after them at held
// offset at.
func (f *chunkFrame) dataRead(at int) {
	f.state, f.left, f.line = chunkEnd, 2, at
}

// scan reads the framing of held[from:] and returns how far it got: to
// the end of held, or to the body's end.
func (f *chunkFrame) scan(held []byte, from int) (int, error) {
	i := from
	for i < len(held) && !f.done {
		switch f.state {
		case chunkData:
			take := min(f.left, int64(len(held)-i))
			i += int(take)
			if f.left -= take; f.left == 0 {
				f.dataRead(i)
			}
		case chunkEnd:
			if held[i] != "\r\n"[2-f.left] {
				return i, fmt.Errorf("%w: a chunk not followed by CRLF", errBadFraming)
			}
			i++
			if f.left--; f.left == 0 {
				f.state, f.line = sizeLine, i
			}
		default:
			eol := bytes.IndexByte(held[i:], '\n')
			if eol < 0 {
				return len(held), nil // the line's end is still to come
			}
			i += eol + 1
			line := held[f.line:i]
			if len(line) >= maxChunkLine {
				return f.line, fmt.Errorf("%w: a line of %d bytes or more", errBadFraming, maxChunkLine)
			}
			if f.state == sizeLine {
				if !crlfLine(line) {
					return i, fmt.Errorf("%w: a chunk-size line %q", errBadFraming, line)
				}
				size, err := chunkSize(line)
				if err != nil {
					return i, fmt.Errorf("%w: %w", errBadFraming, err)
				}
				if f.state, f.left = chunkData, size; size == 0 {
					f.state = trailer
				}
			} else {
				if !crlfLine(line) {
					return i, fmt.Errorf("%w: a trailer line %q", errBadFraming, line)
				}
				f.done = len(line) == 2
			}
			f.line = i
		}
	}
	return i, nil
}

// atLeast is a number of bytes the body still holds past held, however
// it goes on: reading that many never takes what follows the body.
func (f *chunkFrame) atLeast(held []byte) int64 {
	const lastChunk = int64(len("0\r\n\r\n"))
	switch f.state {
	case chunkData:
		return f.left + 2 + lastChunk
	case chunkEnd:
		return f.left + lastChunk
	case trailer:
		return 1
	}
	line := held[f.line:]
	if size := sizeSoFar(line); size > 0 {
		// The line's end, the chunk, its CRLF, the last chunk.
		return 1 + size + 2 + lastChunk
	}
	if len(line) == 0 {
		return lastChunk
	}
	return 3 // "0\r" then "\n\r\n" is the shortest end
}

// sizeSoFar is the value of the hex digits a chunk-size line starts with
// (capped past maxChunk): the chunk is at least that large if the line
// is sound.
func sizeSoFar(line []byte) int64 {
	var v int64
	for _, c := range line {
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			return v
		}
		if v = v<<4 | int64(d); v > maxChunk {
			return maxChunk
		}
	}
	return v
}
