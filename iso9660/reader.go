package iso9660

import (
	"errors"
	"fmt"
	"github.com/ddinit/ddinit/regularfile"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ErrUnsafeName is wrapped when an image names a file in a way that could
// write outside the extraction target or clobber another entry.
var ErrUnsafeName = errors.New("unsafe file name in image")

// Limits on the tree a hostile image may describe.
const (
	maxDirBytes  = 64 << 20 // one directory's records
	maxDepth     = 256
	maxPathBytes = 4095
	maxNameLen   = 255
)

// FileType is the kind of an entry.
type FileType uint8

// The kinds of entries an image can hold.
const (
	TypeRegular FileType = iota
	TypeDir
	TypeSymlink
	TypeCharDevice
	TypeBlockDevice
	TypeFIFO
	TypeSocket
)

func (t FileType) String() string {
	return [...]string{"file", "dir", "symlink", "chardev", "blockdev", "fifo", "socket"}[t]
}

// Extent is a byte range of the image holding part of a file's data.
type Extent struct {
	Offset int64
	Length int64
}

// Entry is one file, directory, link or device of an image.
type Entry struct {
	Path    string // slash-separated, relative to the image root; "" is the root
	Name    string
	Parent  int // index of the parent directory; -1 for the root
	Type    FileType
	Perm    uint32 // permission bits with setuid, setgid and sticky (07777)
	UID     uint32
	GID     uint32
	Nlink   uint32
	Inode   uint64 // Rock Ridge file serial number, 0 when absent
	Size    int64
	Extents []Extent
	Target  string // symlink target
	Rdev    uint64 // device number (unix.Mkdev encoding)
	Mtime   time.Time
	Atime   time.Time
	LinkTo  int // index of the first entry of this hard-link group, -1 if none
}

// Tree is the full listing of an image, parents before children.
type Tree struct {
	Entries []Entry
	Format  string // "rock-ridge", "joliet" or "iso9660"
}

// Image is an opened ISO 9660 image.
type Image struct {
	r         io.ReaderAt
	size      int64
	blockSize int64
	volumeID  string
	tree      volumeDescriptor // the descriptor whose tree is read
	rockRidge bool
	spSkip    int
	format    string
	ceCache   map[uint32][]byte
}

// File is an Image backed by an open file.
type File struct {
	*Image
	f *os.File
}

// OpenFile opens and checks the image at path: a regular file (anything
// else, a FIFO above all, is an error saying what it is, never waited on).
func OpenFile(path string) (*File, error) {
	f, err := OpenImage(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	img, err := Open(f, st.Size())
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &File{Image: img, f: f}, nil
}

// Close releases the file.
func (f *File) Close() error { return f.f.Close() }

// Fd is the file descriptor the image is read from.
func (f *File) Fd() int { return int(f.f.Fd()) }

// Open reads the volume descriptors of the image held by r and decides which
// directory tree to use: Rock Ridge on the primary descriptor when the root
// carries the SUSP indicator, else Joliet, else plain ISO 9660.
func Open(r io.ReaderAt, size int64) (*Image, error) {
	img := &Image{r: r, size: size}
	var primary, joliet *volumeDescriptor
	buf := make([]byte, sectorSize)
	for i := 0; ; i++ {
		if i >= maxDescriptors {
			return nil, formatErr("no volume descriptor set terminator in the first %d descriptors", maxDescriptors)
		}
		off := int64(systemAreaSectors+i) * sectorSize
		if off+sectorSize > size {
			if i == 0 {
				return nil, formatErr("file is %d bytes, too short to hold a volume descriptor (not an ISO image?)", size)
			}
			return nil, formatErr("image is truncated inside its volume descriptor set (%d bytes)", size)
		}
		if _, err := r.ReadAt(buf, off); err != nil {
			return nil, fmt.Errorf("read volume descriptor %d: %w", i, err)
		}
		if buf[0] == vdTypeTerminator && string(buf[1:6]) == "CD001" {
			break
		}
		vd, ok, err := parseVolumeDescriptor(buf)
		if err != nil {
			return nil, fmt.Errorf("volume descriptor %d: %w", i, err)
		}
		if !ok {
			continue
		}
		vd.DescriptorN = i
		switch {
		case vd.Type == vdTypePrimary && primary == nil:
			primary = &vd
		case vd.Joliet && joliet == nil:
			joliet = &vd
		}
	}
	if primary == nil {
		return nil, formatErr("no primary volume descriptor")
	}
	img.blockSize = int64(primary.BlockSize)
	img.volumeID = primary.VolumeID
	if want := int64(primary.VolumeSize) * img.blockSize; want > size {
		return nil, formatErr("image is truncated: its primary volume descriptor says %d bytes, the file has %d", want, size)
	}
	img.tree = *primary
	img.format = "iso9660"

	// The SP indicator sits in the first system use entry of the root's "."
	// record; its presence is what makes this a SUSP (Rock Ridge) image.
	self, err := img.readSelfRecord(primary.Root.Extent)
	if err != nil {
		return nil, fmt.Errorf("root directory: %w", err)
	}
	var rr rockRidge
	if len(self.SystemUse) >= 7 {
		_, _, _ = parseSUSPArea(self.SystemUse[:7], &rr)
	}
	switch {
	case rr.SP:
		img.rockRidge = true
		img.spSkip = rr.SPSkip
		img.format = "rock-ridge"
	case joliet != nil:
		if joliet.BlockSize != primary.BlockSize {
			return nil, formatErr("Joliet block size %d differs from the primary's %d", joliet.BlockSize, primary.BlockSize)
		}
		img.tree = *joliet
		img.format = "joliet"
	}
	return img, nil
}

// Format says which directory tree the image is read through.
func (img *Image) Format() string { return img.format }

// VolumeID is the primary volume identifier.
func (img *Image) VolumeID() string { return img.volumeID }

// Size is the image size in bytes.
func (img *Image) Size() int64 { return img.size }

// read returns n bytes at off, refusing ranges past the end of the image.
func (img *Image) read(off int64, n int64, what string) ([]byte, error) {
	if off < 0 || n < 0 || off > img.size || n > img.size-off {
		return nil, formatErr("%s at byte %d, %d bytes long, runs past the end of the %d-byte image", what, off, n, img.size)
	}
	b := make([]byte, n)
	if _, err := img.r.ReadAt(b, off); err != nil && !(errors.Is(err, io.EOF) && n == 0) {
		return nil, fmt.Errorf("read %s at byte %d: %w", what, off, err)
	}
	return b, nil
}

// readSelfRecord returns the "." record of the directory at extent.
func (img *Image) readSelfRecord(extent uint32) (dirRecord, error) {
	b, err := img.read(int64(extent)*img.blockSize, min(sectorSize, img.size-int64(extent)*img.blockSize), "directory")
	if err != nil {
		return dirRecord{}, err
	}
	r, err := parseDirRecord(b)
	if err != nil {
		return r, err
	}
	if !r.isSelf() {
		return r, formatErr("directory at block %d does not start with its \".\" record", extent)
	}
	return r, nil
}

// readContinuation serves SUSP CE areas; they are small and often packed
// into the same few blocks, so blocks are cached.
func (img *Image) readContinuation(block, offset, length uint32) ([]byte, error) {
	if int64(offset)+int64(length) > img.blockSize {
		// Areas may not cross a block; refusing it also bounds the read.
		return nil, formatErr("SUSP continuation area (offset %d, length %d) crosses its %d-byte block", offset, length, img.blockSize)
	}
	b, ok := img.ceCache[block]
	if !ok {
		var err error
		b, err = img.read(int64(block)*img.blockSize, img.blockSize, "SUSP continuation area")
		if err != nil {
			return nil, err
		}
		if img.ceCache == nil {
			img.ceCache = make(map[uint32][]byte)
		}
		if len(img.ceCache) > 4096 {
			clear(img.ceCache)
		}
		img.ceCache[block] = b
	}
	return b[offset : offset+length], nil
}

func (img *Image) parseSystemUse(r dirRecord) (rockRidge, error) {
	var rr rockRidge
	if !img.rockRidge || len(r.SystemUse) == 0 {
		return rr, nil
	}
	err := parseSUSP(r.SystemUse, img.spSkip, img.readContinuation, &rr)
	return rr, err
}

// dirToRead is a directory waiting to have its records read.
type dirToRead struct {
	idx       int
	extent    uint32
	size      uint32
	relocated bool // reached through a Rock Ridge CL: attributes come from its "."
	depth     int
}

// Walk reads the whole directory tree. Entries come parents first; the
// root is entry 0. Names are checked: an image that names a file "..",
// puts "/" or NUL in a name, or gives two entries of one directory the same
// name is refused with ErrUnsafeName.
func (img *Image) Walk() (*Tree, error) {
	t := &Tree{Format: img.format}
	root := Entry{Parent: -1, Type: TypeDir, Perm: 0o755, Nlink: 2, LinkTo: -1, Mtime: img.tree.Root.Recorded}
	t.Entries = append(t.Entries, root)
	visited := map[uint32]bool{}
	inodes := map[uint64]int{}
	// Directories of a well-formed image never overlap, so together they
	// are never larger than the image. Holding a hostile one to that bounds
	// the entries, and the memory their paths take, by the image's size.
	dirBudget := img.size
	stack := []dirToRead{{idx: 0, extent: img.tree.Root.Extent, size: img.tree.Root.Size, relocated: true}}
	for len(stack) > 0 {
		d := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if visited[d.extent] {
			return nil, formatErr("directory %q at block %d is reached twice (directory loop)", displayPath(t.Entries[d.idx].Path), d.extent)
		}
		visited[d.extent] = true
		children, err := img.readDir(t, d, inodes, &dirBudget)
		if err != nil {
			return nil, fmt.Errorf("directory %q: %w", displayPath(t.Entries[d.idx].Path), err)
		}
		// Push in reverse so the walk is depth-first in directory order.
		for i := len(children) - 1; i >= 0; i-- {
			stack = append(stack, children[i])
		}
	}
	return t, nil
}

func displayPath(p string) string { return "/" + p }

// readDir appends the entries of directory d to t and returns its
// subdirectories.
func (img *Image) readDir(t *Tree, d dirToRead, inodes map[uint64]int, budget *int64) ([]dirToRead, error) {
	start := int64(d.extent) * img.blockSize
	size := int64(d.size)
	if d.relocated {
		self, err := img.readSelfRecord(d.extent)
		if err != nil {
			return nil, err
		}
		size = int64(self.Size)
		rr, err := img.parseSystemUse(self)
		if err != nil {
			return nil, fmt.Errorf("\".\" record: %w", err)
		}
		applyAttributes(&t.Entries[d.idx], self, rr)
	}
	if size > maxDirBytes {
		return nil, formatErr("directory is %d bytes, more than the %d allowed", size, maxDirBytes)
	}
	if *budget -= size; *budget < 0 {
		return nil, formatErr("directories add up to more than the %d-byte image (overlapping directories?)", img.size)
	}
	buf, err := img.read(start, size, "directory")
	if err != nil {
		return nil, err
	}
	parent := d.idx
	names := make(map[string]struct{})
	var subdirs []dirToRead
	var multi *Entry // a multi-extent file still collecting extents
	var multiName []byte
	for pos := 0; pos < len(buf); {
		if buf[pos] == 0 {
			pos = (pos/sectorSize + 1) * sectorSize // records never cross a sector
			continue
		}
		end := min((pos/sectorSize+1)*sectorSize, len(buf))
		rec, err := parseDirRecord(buf[pos:end])
		if err != nil {
			return nil, fmt.Errorf("record at byte %d: %w", pos, err)
		}
		pos += rec.Len
		if rec.isSelf() || rec.isParent() {
			continue
		}
		if multi != nil {
			if string(rec.Name) != string(multiName) {
				return nil, formatErr("multi-extent file %q is interrupted by %q", multi.Name, printable(rec.Name))
			}
			if err := img.addExtent(multi, rec); err != nil {
				return nil, err
			}
			if rec.Flags&flagMultiExtent == 0 {
				multi = nil
			}
			continue
		}
		rr, err := img.parseSystemUse(rec)
		if err != nil {
			return nil, fmt.Errorf("record %q: %w", printable(rec.Name), err)
		}
		if rr.RE {
			continue // a relocated directory: it appears where its CL points from
		}
		if rec.Flags&flagAssociated != 0 {
			continue // associated files (resource forks) are not part of the tree
		}
		e := Entry{Parent: parent, LinkTo: -1}
		switch {
		case rr.HasNM:
			e.Name = string(rr.Name)
		case img.tree.Joliet:
			e.Name = jolietName(rec.Name, rec.isDir())
		default:
			e.Name = plainName(rec.Name, rec.isDir())
		}
		if err := checkName(e.Name); err != nil {
			return nil, fmt.Errorf("%w: %q in %q: %v", ErrUnsafeName, e.Name, displayPath(t.Entries[parent].Path), err)
		}
		if _, dup := names[e.Name]; dup {
			return nil, fmt.Errorf("%w: %q appears twice in %q", ErrUnsafeName, e.Name, displayPath(t.Entries[parent].Path))
		}
		names[e.Name] = struct{}{}
		if p := t.Entries[parent].Path; p == "" {
			e.Path = e.Name
		} else {
			e.Path = p + "/" + e.Name
		}
		if len(e.Path) > maxPathBytes {
			return nil, fmt.Errorf("%w: path %q... is longer than %d bytes", ErrUnsafeName, e.Path[:64], maxPathBytes)
		}
		applyAttributes(&e, rec, rr)
		if err := img.classify(&e, rec, rr); err != nil {
			return nil, fmt.Errorf("%q: %w", displayPath(e.Path), err)
		}
		idx := len(t.Entries)
		if e.Type == TypeDir {
			if d.depth+1 > maxDepth {
				return nil, formatErr("%q is more than %d directories deep", displayPath(e.Path), maxDepth)
			}
			sub := dirToRead{idx: idx, extent: rec.Extent, size: rec.Size, depth: d.depth + 1}
			if rr.HasCL {
				sub.extent, sub.size, sub.relocated = rr.ChildLink, 0, true
			}
			subdirs = append(subdirs, sub)
		} else if e.Type == TypeRegular {
			if err := img.addExtent(&e, rec); err != nil {
				return nil, err
			}
		}
		if e.Type != TypeDir && e.Inode != 0 && e.Nlink > 1 {
			if first, ok := inodes[e.Inode]; ok {
				if t.Entries[first].Type != e.Type {
					return nil, formatErr("%q and %q share inode %d but are of different types", displayPath(t.Entries[first].Path), displayPath(e.Path), e.Inode)
				}
				e.LinkTo = first
			} else {
				inodes[e.Inode] = idx
			}
		}
		t.Entries = append(t.Entries, e)
		if rec.Flags&flagMultiExtent != 0 {
			if e.Type != TypeRegular {
				return nil, formatErr("%q is multi-extent but not a regular file", displayPath(e.Path))
			}
			multi, multiName = &t.Entries[idx], rec.Name
		}
	}
	if multi != nil {
		return nil, formatErr("multi-extent file %q has no final extent", multi.Name)
	}
	return subdirs, nil
}

// applyAttributes fills mode, ownership and times from the record and its
// Rock Ridge entries. Without Rock Ridge, files are 0644 and directories
// 0755, owned by root, as Linux shows them.
func applyAttributes(e *Entry, rec dirRecord, rr rockRidge) {
	e.Mtime = rec.Recorded
	if rec.isDir() {
		e.Perm, e.Nlink = 0o755, 2
	} else {
		e.Perm, e.Nlink = 0o644, 1
	}
	if rr.HasPX {
		e.Perm = rr.Mode & 0o7777
		e.UID, e.GID, e.Nlink = rr.UID, rr.GID, rr.Nlink
		if rr.HasInode {
			e.Inode = rr.Inode
		}
	}
	if !rr.Mtime.IsZero() {
		e.Mtime = rr.Mtime
	}
	e.Atime = e.Mtime
	if !rr.Atime.IsZero() {
		e.Atime = rr.Atime
	}
}

// classify sets the entry's type from Rock Ridge PX (or the directory flag)
// and the type-specific data: link target, device number.
func (img *Image) classify(e *Entry, rec dirRecord, rr rockRidge) error {
	if rr.HasCL {
		// A relocation placeholder: whatever it says of itself, it stands
		// for the directory its CL points to.
		e.Type = TypeDir
		return nil
	}
	if !rr.HasPX {
		if rec.isDir() {
			e.Type = TypeDir
		} else {
			e.Type = TypeRegular
		}
		if rr.HasSL {
			e.Type, e.Target = TypeSymlink, string(rr.Target)
		}
		return nil
	}
	switch rr.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		e.Type = TypeDir
	case unix.S_IFREG:
		e.Type = TypeRegular
	case unix.S_IFLNK:
		e.Type = TypeSymlink
	case unix.S_IFCHR:
		e.Type = TypeCharDevice
	case unix.S_IFBLK:
		e.Type = TypeBlockDevice
	case unix.S_IFIFO:
		e.Type = TypeFIFO
	case unix.S_IFSOCK:
		e.Type = TypeSocket
	default:
		return formatErr("Rock Ridge mode %#o has no file type", rr.Mode)
	}
	if (e.Type == TypeDir) != rec.isDir() {
		return formatErr("Rock Ridge says %s but the directory record says otherwise", e.Type)
	}
	switch e.Type {
	case TypeSymlink:
		if !rr.HasSL || len(rr.Target) == 0 {
			return formatErr("symlink without a Rock Ridge SL target")
		}
		if rr.targetContinues {
			return formatErr("symlink target ends with its CONTINUE flag set")
		}
		if strings.IndexByte(string(rr.Target), 0) >= 0 {
			return formatErr("symlink target contains a NUL byte")
		}
		e.Target = string(rr.Target)
	case TypeCharDevice, TypeBlockDevice:
		if !rr.HasPN {
			return formatErr("device without a Rock Ridge PN entry")
		}
		e.Rdev = deviceNumber(rr.DevHigh, rr.DevLow)
	}
	return nil
}

// deviceNumber decodes PN. Writers that store a whole dev_t put it in the
// low word with a zero high word; others store major and minor apart.
func deviceNumber(high, low uint32) uint64 {
	if high == 0 {
		return uint64(low)
	}
	return unix.Mkdev(high, low)
}

// addExtent records one extent of a regular file, refusing ranges that are
// not inside the image.
func (img *Image) addExtent(e *Entry, rec dirRecord) error {
	if rec.Size == 0 {
		return nil
	}
	off := int64(rec.Extent) * img.blockSize
	n := int64(rec.Size)
	if off > img.size || n > img.size-off {
		return formatErr("%q: data at byte %d, %d bytes long, runs past the end of the %d-byte image", displayPath(e.Path), off, n, img.size)
	}
	e.Extents = append(e.Extents, Extent{Offset: off, Length: n})
	e.Size += n
	return nil
}

// checkName refuses names that could escape a directory or confuse a path.
func checkName(name string) error {
	switch {
	case name == "":
		return errors.New("empty name")
	case name == "." || name == "..":
		return errors.New("names a directory itself or its parent")
	case strings.IndexByte(name, '/') >= 0:
		return errors.New("contains \"/\"")
	case strings.IndexByte(name, 0) >= 0:
		return errors.New("contains a NUL byte")
	case len(name) > maxNameLen:
		return fmt.Errorf("is %d bytes, longer than %d", len(name), maxNameLen)
	}
	return nil
}

// ReadEntry returns the contents of a regular file of the image, refusing
// one larger than limit (a hostile image names any size).
func (img *Image) ReadEntry(e Entry, limit int64) ([]byte, error) {
	if e.Type != TypeRegular {
		return nil, fmt.Errorf("%s is not a regular file", displayPath(e.Path))
	}
	if e.Size > limit {
		return nil, fmt.Errorf("%s is %d bytes, over %d", displayPath(e.Path), e.Size, limit)
	}
	out := make([]byte, 0, e.Size)
	for _, x := range e.Extents {
		b, err := img.read(x.Offset, x.Length, displayPath(e.Path))
		if err != nil {
			return nil, err
		}
		out = append(out, b...)
	}
	if int64(len(out)) < e.Size {
		return nil, fmt.Errorf("%s: %d bytes of %d", displayPath(e.Path), len(out), e.Size)
	}
	return out[:e.Size], nil
}

// ImageTimeout bounds opening an image and each read of it from its
// source: the images are read from a 9p drive, which gives 1 MB in
// milliseconds; a Windows that gives nothing for this long (an antivirus
// scan on open takes seconds) has stopped answering, and the boot says so
// rather than wait for ever. There is no bound on an image's size: it is
// read in chunks.
const ImageTimeout = 30 * time.Second

// OpenImage opens an image for reading: a regular file only (a FIFO, a
// directory, a device is an error saying what it is, never waited on),
// within ImageTimeout.
func OpenImage(path string) (*os.File, error) {
	return regularfile.OpenWithin(path, ImageTimeout)
}
