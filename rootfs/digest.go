package rootfs

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/ddinit/ddinit/iso9660"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/ddinit/ddinit/regularfile"
)

// SidecarSuffix names the digest file kept beside an image.
const SidecarSuffix = ".sha256"

// maxSidecarBytes bounds what is read of a sidecar: a digest, a name and
// a newline, as sha256sum writes them.
const maxSidecarBytes = 4 << 10

// openImage opens an image for reading (iso9660.OpenImage: a regular
// file only, within its bound).
func openImage(path string) (*os.File, error) { return iso9660.OpenImage(path) }

// DigestMismatchError says an image is not the one its digest names.
type DigestMismatchError struct {
	File     string
	Expected string
	Actual   string
	Source   string // where the expected digest came from
}

func (e *DigestMismatchError) Error() string {
	return fmt.Sprintf("%s: sha256 mismatch: expected %s (from %s), got %s; the image is corrupt or not the one its digest names: reinstall it", e.File, e.Expected, e.Source, e.Actual)
}

// ParseDigest accepts a hex sha256, optionally prefixed "sha256:", and
// returns it in lower case.
func ParseDigest(s string) (string, error) {
	d := strings.ToLower(strings.TrimPrefix(strings.TrimSpace(s), "sha256:"))
	if len(d) != sha256.Size*2 {
		return "", fmt.Errorf("%q is not a sha256 digest (want 64 hex digits)", s)
	}
	if _, err := hex.DecodeString(d); err != nil {
		return "", fmt.Errorf("%q is not a sha256 digest (want 64 hex digits)", s)
	}
	return d, nil
}

// ReadSidecar returns the digest in "<image>.sha256": its first word, as
// sha256sum writes it.
func ReadSidecar(image string) (string, error) {
	path := image + SidecarSuffix
	b, err := regularfile.Read(path, maxSidecarBytes)
	if err != nil {
		return "", fmt.Errorf("the image's digest sidecar: %w", err)
	}
	fields := strings.Fields(string(b))
	if len(fields) == 0 {
		return "", fmt.Errorf("%s is empty; it must hold the image's hex sha256", path)
	}
	d, err := ParseDigest(fields[0])
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return d, nil
}

// ExpectedDigest picks the digest an image must have: the configured one,
// or its sidecar's. It says where the digest came from.
func ExpectedDigest(image, configured string) (digest, source string, err error) {
	if configured != "" {
		d, err := ParseDigest(configured)
		if err != nil {
			return "", "", fmt.Errorf("configured digest for %s: %w", image, err)
		}
		return d, "the configuration", nil
	}
	d, err := ReadSidecar(image)
	if errors.Is(err, os.ErrNotExist) {
		return "", "", fmt.Errorf("%s has no digest to check against: %s%s is missing and none is configured", image, image, SidecarSuffix)
	}
	if err != nil {
		return "", "", err
	}
	return d, image + SidecarSuffix, nil
}

// HashFile returns the hex sha256 of a file and its size.
func HashFile(path string) (string, int64, error) {
	f, err := openImage(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	return copyAndHash(io.Discard, regularfile.ReaderWithin(f, iso9660.ImageTimeout))
}

// CopyAndHash copies src into a new file dst and returns the hex sha256 of
// what was copied: one pass over a slow source. dst is synced.
func CopyAndHash(dst, src string) (string, int64, error) {
	in, err := openImage(src)
	if err != nil {
		return "", 0, err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return "", 0, err
	}
	digest, n, err := copyAndHash(out, regularfile.ReaderWithin(in, iso9660.ImageTimeout))
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", n, fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	return digest, n, nil
}

const hashChunk = 1 << 20

// copyAndHash reads src in chunks; each chunk is hashed and written by two
// goroutines while the next one is read, so the hash (the slowest stage
// here) overlaps the I/O.
func copyAndHash(w io.Writer, r io.Reader) (string, int64, error) {
	const depth = 4
	type chunk struct {
		buf []byte
		n   int
	}
	free := make(chan []byte, depth)
	for range depth {
		free <- make([]byte, hashChunk)
	}
	toHash := make(chan chunk, depth)
	toWrite := make(chan chunk, depth)
	h := sha256.New()
	var wg sync.WaitGroup
	var writeErr error
	// Each buffer goes back to the pool once both the hasher and the
	// writer are done with it: the writer, which runs second, returns it.
	hashed := make(chan struct{}, depth)
	wg.Add(2)
	go func() {
		defer wg.Done()
		for c := range toHash {
			h.Write(c.buf[:c.n])
			hashed <- struct{}{}
		}
	}()
	go func() {
		defer wg.Done()
		for c := range toWrite {
			if writeErr == nil {
				if _, err := w.Write(c.buf[:c.n]); err != nil {
					writeErr = err
				}
			}
			<-hashed
			free <- c.buf
		}
	}()
	var total int64
	var readErr error
	for {
		buf := <-free
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			total += int64(n)
			toHash <- chunk{buf, n}
			toWrite <- chunk{buf, n}
		} else {
			free <- buf
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			readErr = err
			break
		}
	}
	close(toHash)
	close(toWrite)
	wg.Wait()
	if readErr != nil {
		return "", total, readErr
	}
	if writeErr != nil {
		return "", total, writeErr
	}
	return hex.EncodeToString(h.Sum(nil)), total, nil
}

// Verify hashes image and compares it with the expected digest.
func Verify(image, expected, source string) (string, error) {
	actual, _, err := HashFile(image)
	if err != nil {
		return "", err
	}
	if actual != expected {
		return actual, &DigestMismatchError{File: image, Expected: expected, Actual: actual, Source: source}
	}
	return actual, nil
}
