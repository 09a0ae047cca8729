package iso9660

import (
	"errors"
	"fmt"
	"github.com/ddinit/ddinit/atomicfile"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ExtractOptions tune Extract.
type ExtractOptions struct {
	// Workers is how many goroutines create files; 0 means GOMAXPROCS.
	Workers int
	// Sync flushes the target file system before Extract returns, so that a
	// tree that is later renamed into place survives a power loss.
	Sync bool
}

// batch is a run of non-directory entries of one directory, created by one
// worker with one directory file descriptor.
type batch struct {
	parent  int
	entries []int
	bytes   int64
}

// extractor holds the state of one extraction.
type extractor struct {
	tree    *Tree
	src     io.ReaderAt
	srcFD   int // -1 when the source is not a file
	rootFD  int
	asRoot  bool // running as root: ownership is restored
	umask   uint32
	noCopy  atomic.Bool // copy_file_range is not usable between these files
	bufPool sync.Pool
}

// Extract writes every entry of t, read from img, into dir. dir must exist
// and be empty. Every path is resolved beneath dir without following
// symlinks, and symlinks are created only after all directories, so nothing
// the image contains can redirect a write outside dir. Extract does not
// clean up after a failure: use ExtractAtomic for that.
func Extract(img *File, t *Tree, dir string, opts ExtractOptions) error {
	if err := checkEmptyDir(dir); err != nil {
		return err
	}
	rootFD, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer unix.Close(rootFD)
	x := &extractor{
		tree:   t,
		src:    img.f,
		srcFD:  img.Fd(),
		rootFD: rootFD,
		asRoot: os.Geteuid() == 0,
		umask:  currentUmask(),
	}
	x.bufPool.New = func() any { b := make([]byte, 1<<20); return &b }
	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	if err := x.makeDirectories(); err != nil {
		return err
	}
	batches, links := x.plan()
	if err := parallel(workers, len(batches), func(i int) error { return x.createBatch(batches[i]) }); err != nil {
		return err
	}
	for _, i := range links {
		if err := x.link(i); err != nil {
			return err
		}
	}
	// Directory attributes last: creating entries changes a directory's
	// mtime, and a read-only directory could not take new entries.
	var dirs []int
	for i := range t.Entries {
		if t.Entries[i].Type == TypeDir {
			dirs = append(dirs, i)
		}
	}
	if err := parallel(workers, len(dirs), func(i int) error { return x.finishDirectory(dirs[i]) }); err != nil {
		return err
	}
	if opts.Sync {
		if err := unix.Syncfs(rootFD); err != nil {
			return fmt.Errorf("sync %s: %w", dir, err)
		}
	}
	return nil
}

// ExtractAtomic extracts into a temporary directory beside dir and renames
// it into place, so a crash never leaves a half tree under dir's name. dir
// must not exist, or be an empty directory.
func ExtractAtomic(img *File, t *Tree, dir string, opts ExtractOptions) error {
	if st, err := os.Lstat(dir); err == nil {
		if !st.IsDir() {
			return fmt.Errorf("extract into %s: it exists and is not a directory", dir)
		}
		if err := checkEmptyDir(dir); err != nil {
			return err
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("extract into %s: %w", dir, err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "."+filepath.Base(dir)+".partial-")
	if err != nil {
		return fmt.Errorf("extract into %s: %w", dir, err)
	}
	if err := Extract(img, t, tmp, opts); err != nil {
		os.RemoveAll(tmp)
		return err
	}
	if err := os.Rename(tmp, dir); err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("extract into %s: %w", dir, err)
	}
	if opts.Sync {
		return atomicfile.SyncDir(filepath.Dir(dir))
	}
	return nil
}

func checkEmptyDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("extract into %s: %w", dir, err)
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if err != nil && err != io.EOF {
		return fmt.Errorf("extract into %s: %w", dir, err)
	}
	if len(names) > 0 {
		return fmt.Errorf("extract into %s: the directory is not empty (found %q)", dir, names[0])
	}
	return nil
}

// makeDirectories creates every directory, parents first, mode 0700 until
// finishDirectory gives it its own.
func (x *extractor) makeDirectories() error {
	lastParent, parentFD := -1, -1
	defer func() {
		if parentFD >= 0 && parentFD != x.rootFD {
			unix.Close(parentFD)
		}
	}()
	for i := 1; i < len(x.tree.Entries); i++ {
		e := &x.tree.Entries[i]
		if e.Type != TypeDir {
			continue
		}
		if e.Parent != lastParent {
			if parentFD >= 0 && parentFD != x.rootFD {
				unix.Close(parentFD)
			}
			fd, err := x.openDir(e.Parent, unix.O_PATH)
			if err != nil {
				return err
			}
			lastParent, parentFD = e.Parent, fd
		}
		if err := unix.Mkdirat(parentFD, e.Name, 0o700); err != nil {
			return fmt.Errorf("create directory %s: %w", displayPath(e.Path), err)
		}
	}
	return nil
}

// plan groups the non-directory entries into batches per directory, split
// so that both workers get a share of a big directory, and sets the hard
// links apart: they need their first name to exist. The heaviest batches
// go first so that the big binaries of a version pack are copied side by
// side instead of one finishing alone at the end.
func (x *extractor) plan() (batches []batch, links []int) {
	const maxBatchEntries = 128
	const maxBatchBytes = 16 << 20
	var cur batch
	var curBytes int64
	flush := func() {
		if len(cur.entries) > 0 {
			batches = append(batches, cur)
		}
		cur, curBytes = batch{}, 0
	}
	for i := 1; i < len(x.tree.Entries); i++ {
		e := &x.tree.Entries[i]
		if e.Type == TypeDir {
			continue
		}
		if e.LinkTo >= 0 {
			links = append(links, i)
			continue
		}
		if e.Parent != cur.parent || len(cur.entries) >= maxBatchEntries || curBytes >= maxBatchBytes {
			flush()
			cur.parent = e.Parent
		}
		cur.entries = append(cur.entries, i)
		curBytes += e.Size
		cur.bytes = curBytes
	}
	flush()
	sort.SliceStable(batches, func(i, j int) bool { return batches[i].bytes > batches[j].bytes })
	return batches, links
}

// openDir opens directory entry i beneath the root without following any
// symlink on the way.
func (x *extractor) openDir(i int, flags int) (int, error) {
	if i == 0 {
		if flags&unix.O_PATH != 0 {
			return x.rootFD, nil
		}
		fd, err := unix.Openat(x.rootFD, ".", flags|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, fmt.Errorf("open extraction root: %w", err)
		}
		return fd, nil
	}
	p := x.tree.Entries[i].Path
	fd, err := openBeneath(x.rootFD, p, flags|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("open directory %s: %w", displayPath(p), err)
	}
	return fd, nil
}

// openBeneath opens path relative to dirFD refusing symlinks anywhere in it
// and any escape from dirFD (openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS;
// on kernels without openat2, a walk with O_NOFOLLOW at every step).
func openBeneath(dirFD int, path string, flags int) (int, error) {
	if !noOpenat2.Load() {
		how := unix.OpenHow{
			Flags:   uint64(flags),
			Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
		}
		fd, err := unix.Openat2(dirFD, path, &how)
		if err != unix.ENOSYS {
			return fd, err
		}
		noOpenat2.Store(true)
	}
	parts := strings.Split(path, "/")
	cur := dirFD
	for i, part := range parts {
		f := unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
		if i == len(parts)-1 {
			f = flags | unix.O_NOFOLLOW
		}
		if part == "" || part == "." || part == ".." {
			return -1, unix.EINVAL
		}
		fd, err := unix.Openat(cur, part, f, 0)
		if cur != dirFD {
			unix.Close(cur)
		}
		if err != nil {
			return -1, err
		}
		cur = fd
	}
	return cur, nil
}

var noOpenat2 atomic.Bool

func (x *extractor) createBatch(b batch) error {
	dirFD, err := x.openDir(b.parent, unix.O_PATH)
	if err != nil {
		return err
	}
	if dirFD != x.rootFD {
		defer unix.Close(dirFD)
	}
	for _, i := range b.entries {
		if err := x.create(dirFD, &x.tree.Entries[i]); err != nil {
			return fmt.Errorf("extract %s: %w", displayPath(x.tree.Entries[i].Path), err)
		}
	}
	return nil
}

// create makes one non-directory entry in dirFD with its data and
// attributes.
func (x *extractor) create(dirFD int, e *Entry) error {
	switch e.Type {
	case TypeRegular:
		return x.createFile(dirFD, e)
	case TypeSymlink:
		if err := unix.Symlinkat(e.Target, dirFD, e.Name); err != nil {
			return err
		}
		if err := x.chownAt(dirFD, e); err != nil {
			return err
		}
		return unix.UtimesNanoAt(dirFD, e.Name, timespecs(e), unix.AT_SYMLINK_NOFOLLOW)
	case TypeCharDevice, TypeBlockDevice, TypeFIFO, TypeSocket:
		mode := map[FileType]uint32{TypeCharDevice: unix.S_IFCHR, TypeBlockDevice: unix.S_IFBLK, TypeFIFO: unix.S_IFIFO, TypeSocket: unix.S_IFSOCK}[e.Type]
		if err := unix.Mknodat(dirFD, e.Name, mode|0o600, int(e.Rdev)); err != nil {
			if err == unix.EPERM && (e.Type == TypeCharDevice || e.Type == TypeBlockDevice) {
				return fmt.Errorf("create %s: %w (device nodes need root)", e.Type, err)
			}
			return err
		}
		if err := x.chownAt(dirFD, e); err != nil {
			return err
		}
		// The node was just created with O_EXCL semantics, so it is not a
		// symlink and following is harmless.
		if err := unix.Fchmodat(dirFD, e.Name, e.Perm, 0); err != nil {
			return err
		}
		return unix.UtimesNanoAt(dirFD, e.Name, timespecs(e), unix.AT_SYMLINK_NOFOLLOW)
	}
	return fmt.Errorf("unknown entry type %d", e.Type)
}

func (x *extractor) createFile(dirFD int, e *Entry) error {
	fd, err := unix.Openat(dirFD, e.Name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, e.Perm&0o777)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	for _, ext := range e.Extents {
		if err := x.copyExtent(fd, ext); err != nil {
			return err
		}
	}
	chowned := x.asRoot && (e.UID != 0 || e.GID != 0)
	if chowned {
		if err := unix.Fchown(fd, int(e.UID), int(e.GID)); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
	}
	// open(2) applied the umask and chown(2) cleared setuid/setgid.
	if chowned || e.Perm&^0o777 != 0 || e.Perm&x.umask != 0 {
		if err := unix.Fchmod(fd, e.Perm); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	return futimens(fd, e)
}

// copyExtent appends one extent of the image to fd, in the kernel when it
// can (copy_file_range), through a buffer otherwise.
func (x *extractor) copyExtent(fd int, ext Extent) error {
	off, left := ext.Offset, ext.Length
	if x.srcFD >= 0 && !x.noCopy.Load() {
		for left > 0 {
			n, err := unix.CopyFileRange(x.srcFD, &off, fd, nil, int(min(left, 1<<30)), 0)
			if err != nil {
				if err == unix.EINTR || err == unix.EAGAIN {
					continue
				}
				if left == ext.Length && (err == unix.EXDEV || err == unix.EINVAL || err == unix.ENOSYS || err == unix.EOPNOTSUPP) {
					x.noCopy.Store(true)
					break
				}
				return fmt.Errorf("copy data at image byte %d: %w", off, err)
			}
			if n == 0 {
				return fmt.Errorf("image ends at byte %d inside file data (truncated image?)", off)
			}
			left -= int64(n)
		}
		if left == 0 {
			return nil
		}
	}
	bp := x.bufPool.Get().(*[]byte)
	defer x.bufPool.Put(bp)
	buf := *bp
	for left > 0 {
		n, err := x.src.ReadAt(buf[:min(left, int64(len(buf)))], off)
		if n > 0 {
			if _, werr := writeAll(fd, buf[:n]); werr != nil {
				return werr
			}
			off += int64(n)
			left -= int64(n)
		}
		if err != nil && left > 0 {
			if err == io.EOF {
				return fmt.Errorf("image ends at byte %d inside file data (truncated image?)", off)
			}
			return fmt.Errorf("read image at byte %d: %w", off, err)
		}
	}
	return nil
}

func writeAll(fd int, b []byte) (int, error) {
	total := 0
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return total, fmt.Errorf("write: %w", err)
		}
		b = b[n:]
		total += n
	}
	return total, nil
}

func (x *extractor) chownAt(dirFD int, e *Entry) error {
	if !x.asRoot || (e.UID == 0 && e.GID == 0) {
		return nil
	}
	if err := unix.Fchownat(dirFD, e.Name, int(e.UID), int(e.GID), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	return nil
}

// link gives entry i, a further name of an already created file, its place.
func (x *extractor) link(i int) error {
	e := &x.tree.Entries[i]
	first := &x.tree.Entries[e.LinkTo]
	srcDir, err := x.openDir(first.Parent, unix.O_PATH)
	if err != nil {
		return err
	}
	if srcDir != x.rootFD {
		defer unix.Close(srcDir)
	}
	dstDir, err := x.openDir(e.Parent, unix.O_PATH)
	if err != nil {
		return err
	}
	if dstDir != x.rootFD {
		defer unix.Close(dstDir)
	}
	// Flags 0: a symlink source is linked itself, never followed.
	if err := unix.Linkat(srcDir, first.Name, dstDir, e.Name, 0); err != nil {
		return fmt.Errorf("hard link %s to %s: %w", displayPath(e.Path), displayPath(first.Path), err)
	}
	return nil
}

func (x *extractor) finishDirectory(i int) error {
	e := &x.tree.Entries[i]
	fd, err := x.openDir(i, unix.O_RDONLY)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if x.asRoot && (e.UID != 0 || e.GID != 0) {
		if err := unix.Fchown(fd, int(e.UID), int(e.GID)); err != nil {
			return fmt.Errorf("chown %s: %w", displayPath(e.Path), err)
		}
	}
	if err := unix.Fchmod(fd, e.Perm); err != nil {
		return fmt.Errorf("chmod %s: %w", displayPath(e.Path), err)
	}
	if err := futimens(fd, e); err != nil {
		return fmt.Errorf("set times of %s: %w", displayPath(e.Path), err)
	}
	return nil
}

func timespecs(e *Entry) []unix.Timespec {
	return []unix.Timespec{toTimespec(e.Atime), toTimespec(e.Mtime)}
}

func toTimespec(t time.Time) unix.Timespec {
	if t.IsZero() {
		return unix.Timespec{Sec: 0, Nsec: 0}
	}
	return unix.NsecToTimespec(t.UnixNano())
}

// futimens sets the times of an open file (utimensat with a NULL path).
func futimens(fd int, e *Entry) error {
	ts := timespecs(e)
	_, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	if errno != 0 {
		return fmt.Errorf("set times: %w", errno)
	}
	return nil
}

// currentUmask reads the umask without changing it (umask(2) would race
// with other goroutines creating files).
func currentUmask() uint32 {
	b, err := os.ReadFile("/proc/self/status")
	if err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "Umask:"); ok {
				if m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32); err == nil {
					return uint32(m)
				}
			}
		}
	}
	return 0o777 // unknown: always chmod
}

// parallel runs fn(0..n-1) on up to workers goroutines and returns the
// first error; after an error no new index is started.
func parallel(workers, n int, fn func(int) error) error {
	if n == 0 {
		return nil
	}
	workers = min(workers, n)
	var next atomic.Int64
	var failed atomic.Bool
	var once sync.Once
	var first error
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !failed.Load() {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					once.Do(func() { first = err })
					failed.Store(true)
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}
