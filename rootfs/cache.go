package rootfs

import (
	"encoding/json"
	"errors"
	"fmt"
	"github.com/ddinit/ddinit/iso9660"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ddinit/ddinit/atomicfile"
	"github.com/ddinit/ddinit/mounts"
	"github.com/ddinit/ddinit/regularfile"
	"github.com/sirupsen/logrus"
)

// Cache layout, under <data-dir>/isocache:
//
//	<sha256>/image.iso   the verified image
//	<sha256>/entry.json  written last: its presence makes the entry complete
//	<sha256>/rootfs/     the extracted tree (user-space path), renamed in whole
//	.partial-*           an entry being built; left over only by a crash
//	state.json           the digests of the last two boots (what GC keeps)
//	.lock                held while a ddinit uses the cache
const (
	entryImage    = "image.iso"
	entryMeta     = "entry.json"
	entryTree     = "rootfs"
	partialPrefix = ".partial-"
	stateFile     = "state.json"
	lockFile      = ".lock"
)

// Bounds on what is read of the cache's own records: an entry's is a
// digest, a size, a path and a time; the state, a few digests.
const (
	maxEntryMetaBytes = 64 << 10
	maxStateBytes     = 1 << 20
)

// Source is an image to prepare.
type Source struct {
	Name   string // what the image is, for messages: "base", "version pack"
	Path   string
	Digest string // configured digest; empty means read the sidecar
}

// Layer is a prepared image in the cache.
type Layer struct {
	Name      string `json:"name"`
	Source    string `json:"source"`
	Digest    string `json:"digest"`
	Entry     string `json:"entry"`          // the cache entry directory
	Image     string `json:"image"`          // the cached image
	Tree      string `json:"tree,omitempty"` // the extracted tree, when extracted
	CacheHit  bool   `json:"cacheHit"`       // nothing was hashed or copied
	Hashed    int64  `json:"hashedBytes"`
	Extracted bool   `json:"extracted"`
	Elapsed   time.Duration
}

type entryInfo struct {
	Digest  string    `json:"digest"`
	Size    int64     `json:"size"`
	Source  string    `json:"source"`
	Created time.Time `json:"created"`
}

// Cache is the content-addressed image cache. Open it, use it, Close it.
type Cache struct {
	Dir  string
	Log  logrus.FieldLogger
	lock *os.File
}

// OpenCache creates the cache directory if needed, takes its lock (one
// ddinit per data store) and removes what a crash left half built.
func OpenCache(dir string, log logrus.FieldLogger) (*Cache, error) {
	if log == nil {
		log = logrus.StandardLogger()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("image cache %s: %w", dir, err)
	}
	lock, err := mounts.LockExclusive(filepath.Join(dir, lockFile), "image cache "+dir)
	if err != nil {
		return nil, err
	}
	c := &Cache{Dir: dir, Log: log, lock: lock}
	names, err := readDirNames(dir)
	if err != nil {
		c.Close()
		return nil, err
	}
	for _, n := range names {
		// A half-written record of the boots (a crash while it was
		// replaced) is a temporary file beside it: gone with the rest.
		if strings.HasPrefix(n, "."+stateFile+".") {
			os.Remove(filepath.Join(dir, n))
			continue
		}
		if strings.HasPrefix(n, partialPrefix) {
			log.WithField("path", filepath.Join(dir, n)).Warn("removing a cache entry left half built by an earlier crash")
			if err := os.RemoveAll(filepath.Join(dir, n)); err != nil {
				c.Close()
				return nil, fmt.Errorf("remove stale %s: %w", n, err)
			}
		}
	}
	return c, nil
}

// Close releases the cache lock.
func (c *Cache) Close() error {
	if c.lock == nil {
		return nil
	}
	err := c.lock.Close()
	c.lock = nil
	return err
}

// Ensure makes src available in the cache: verified, and extracted when
// wantTree. A warm call, whose expected digest names a complete entry, does
// no hashing; if the tree is there too it does no extraction either.
func (c *Cache) Ensure(src Source, wantTree bool) (Layer, error) {
	start := time.Now()
	expected, from, err := ExpectedDigest(src.Path, src.Digest)
	if err != nil {
		return Layer{}, fmt.Errorf("%s image: %w", src.Name, err)
	}
	entry := filepath.Join(c.Dir, expected)
	l := Layer{Name: src.Name, Source: src.Path, Digest: expected, Entry: entry, Image: filepath.Join(entry, entryImage)}
	log := c.Log.WithFields(logrus.Fields{"image": src.Name, "digest": digestPrefix(expected)})

	switch ok, err := entryComplete(entry, expected); {
	case err != nil:
		return l, err
	case ok:
		l.CacheHit = true
	default:
		if _, err := os.Lstat(entry); err == nil {
			log.Warn("cache entry is incomplete; rebuilding it")
			if err := os.RemoveAll(entry); err != nil {
				return l, fmt.Errorf("remove incomplete cache entry %s: %w", entry, err)
			}
		}
		if err := c.fill(src, expected, from, entry, &l); err != nil {
			return l, err
		}
	}
	if wantTree {
		tree := filepath.Join(entry, entryTree)
		if _, err := os.Lstat(tree); err != nil {
			if err := c.extract(l.Image, entry, tree); err != nil {
				return l, fmt.Errorf("%s image %s: %w", src.Name, src.Path, err)
			}
			l.Extracted = true
			l.CacheHit = false
		}
		l.Tree = tree
	}
	l.Elapsed = time.Since(start)
	log.WithFields(logrus.Fields{"cacheHit": l.CacheHit, "hashedBytes": l.Hashed, "extracted": l.Extracted, "ms": l.Elapsed.Milliseconds()}).Info("image ready")
	return l, nil
}

// fill copies and verifies src into a new cache entry, atomically.
func (c *Cache) fill(src Source, expected, from, entry string, l *Layer) error {
	tmp, err := os.MkdirTemp(c.Dir, partialPrefix+digestPrefix(expected)+"-")
	if err != nil {
		return fmt.Errorf("image cache: %w", err)
	}
	done := false
	defer func() {
		if !done {
			os.RemoveAll(tmp)
		}
	}()
	actual, size, err := CopyAndHash(filepath.Join(tmp, entryImage), src.Path)
	if err != nil {
		return fmt.Errorf("%s image: %w", src.Name, err)
	}
	l.Hashed = size
	if actual != expected {
		return fmt.Errorf("%s image: %w", src.Name, &DigestMismatchError{File: src.Path, Expected: expected, Actual: actual, Source: from})
	}
	info := entryInfo{Digest: expected, Size: size, Source: src.Path, Created: time.Now().UTC()}
	if err := atomicfile.Write(filepath.Join(tmp, entryMeta), mustJSON(info), 0o644); err != nil {
		return err
	}
	if err := atomicfile.SyncDir(tmp); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	if err := os.Rename(tmp, entry); err != nil {
		return fmt.Errorf("image cache: %w", err)
	}
	done = true
	return atomicfile.SyncDir(c.Dir)
}

func (c *Cache) extract(image, entry, tree string) error {
	// A crash during an earlier extraction leaves a partial tree here.
	names, err := readDirNames(entry)
	if err != nil {
		return err
	}
	for _, n := range names {
		if strings.HasPrefix(n, "."+entryTree+".partial-") {
			if err := os.RemoveAll(filepath.Join(entry, n)); err != nil {
				return err
			}
		}
	}
	f, err := iso9660.OpenFile(image)
	if err != nil {
		return err
	}
	defer f.Close()
	t, err := f.Walk()
	if err != nil {
		return fmt.Errorf("%s: %w", image, err)
	}
	return iso9660.ExtractAtomic(f, t, tree, iso9660.ExtractOptions{Sync: true})
}

// entryComplete reports whether entry holds a finished cache entry for
// digest.
func entryComplete(entry, digest string) (bool, error) {
	b, err := regularfile.Read(filepath.Join(entry, entryMeta), maxEntryMetaBytes)
	if errors.Is(err, regularfile.ErrTimeout) {
		// A file system that does not answer: nothing can be rebuilt on it.
		return false, fmt.Errorf("image cache: %w", err)
	}
	if err != nil {
		// Missing, or not what ddinit writes (a folder, a FIFO, a file
		// too large, a symlink loop): the entry is made again.
		return false, nil
	}
	var info entryInfo
	if json.Unmarshal(b, &info) != nil || info.Digest != digest {
		return false, nil
	}
	st, err := os.Stat(filepath.Join(entry, entryImage))
	if err != nil || !st.Mode().IsRegular() || st.Size() != info.Size {
		return false, nil
	}
	return true, nil
}

type cacheState struct {
	// Boots lists the digests each recent boot used, newest first.
	Boots [][]string `json:"boots"`
}

// Collect records the digests this boot uses and removes every entry that
// neither this boot nor the previous one used, nor keep names (a pack to
// roll back to).
func (c *Cache) Collect(current []string, keep ...string) error {
	current = slices.Clone(current)
	slices.Sort(current)
	statePath := filepath.Join(c.Dir, stateFile)
	var st cacheState
	b, err := regularfile.Read(statePath, maxStateBytes)
	if err == nil {
		err = json.Unmarshal(b, &st)
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		c.Log.WithField("path", statePath).WithError(err).Warn("unreadable cache state; starting it anew")
		st = cacheState{}
	}
	if len(st.Boots) == 0 || !slices.Equal(st.Boots[0], current) {
		st.Boots = append([][]string{current}, st.Boots...)
		if len(st.Boots) > 2 {
			st.Boots = st.Boots[:2]
		}
		if err := atomicfile.Write(statePath, mustJSON(st), 0o644); err != nil {
			return fmt.Errorf("image cache state: %w", err)
		}
	}
	kept := map[string]bool{}
	for _, d := range keep {
		kept[d] = true
	}
	for _, boot := range st.Boots {
		for _, d := range boot {
			kept[d] = true
		}
	}
	names, err := readDirNames(c.Dir)
	if err != nil {
		return err
	}
	for _, n := range names {
		if _, err := ParseDigest(n); err != nil || kept[n] {
			continue
		}
		c.Log.WithField("digest", digestPrefix(n)).Info("removing an image cache entry no recent boot used")
		if err := os.RemoveAll(filepath.Join(c.Dir, n)); err != nil {
			return fmt.Errorf("remove old cache entry %s: %w", n, err)
		}
	}
	return nil
}

func readDirNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

func mustJSON(v any) []byte {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		panic(err) // only called with plain structs
	}
	return append(b, '\n')
}

// short is a digest's first 12 characters, as docker shows ids.
func digestPrefix(digest string) string { return digest[:min(12, len(digest))] }
