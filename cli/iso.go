package cli

import (
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/ddinit/ddinit/iso9660"

	"github.com/ddinit/ddinit/rootfs"
	"golang.org/x/sys/unix"
)

var isoCommands = []command{
	{name: "ls", summary: "every entry of an image: mode, links, owner, size or device, mtime, path", args: "IMAGE", setup: isoLs},
	{name: "extract", summary: "unpack an image into DIR (absent or empty)", args: "IMAGE DIR", setup: isoExtract},
	{name: "verify", summary: "check an image's sha256 (its .sha256 beside it, or SHA256) and that it reads", args: "IMAGE [SHA256]", setup: isoVerify},
}

func openTree(path string) (*iso9660.File, *iso9660.Tree, error) {
	img, err := iso9660.OpenFile(path)
	if err != nil {
		return nil, nil, err
	}
	t, err := img.Walk()
	if err != nil {
		img.Close()
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return img, t, nil
}

func isoLs(env *Env, fs *flags) func() error {
	return func() error {
		if fs.NArg() != 1 {
			return fs.argCount("name one IMAGE")
		}
		return list(env, fs.Arg(0))
	}
}

func list(env *Env, path string) error {
	img, t, err := openTree(path)
	if err != nil {
		return err
	}
	defer img.Close()
	fmt.Fprintf(env.Stdout, "# %s: volume %q, %s, %d entries\n", path, img.VolumeID(), t.Format, len(t.Entries))
	w := tabwriter.NewWriter(env.Stdout, 0, 0, 1, ' ', 0)
	for i := range t.Entries {
		writeEntry(w, t, i)
	}
	return w.Flush()
}

func writeEntry(w io.Writer, t *iso9660.Tree, i int) {
	e := &t.Entries[i]
	name := "/" + e.Path
	size := fmt.Sprint(e.Size)
	switch e.Type {
	case iso9660.TypeSymlink:
		name += " -> " + e.Target
	case iso9660.TypeCharDevice, iso9660.TypeBlockDevice:
		size = fmt.Sprintf("%d,%d", unix.Major(e.Rdev), unix.Minor(e.Rdev))
	}
	if e.LinkTo >= 0 {
		name += " link to /" + t.Entries[e.LinkTo].Path
	}
	fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%s\t%s\t%s\n", modeString(e), e.Nlink, e.UID, e.GID, size, e.Mtime.UTC().Format(time.DateTime), name)
}

func modeString(e *iso9660.Entry) string {
	typ := map[iso9660.FileType]byte{iso9660.TypeRegular: '-', iso9660.TypeDir: 'd', iso9660.TypeSymlink: 'l', iso9660.TypeCharDevice: 'c', iso9660.TypeBlockDevice: 'b', iso9660.TypeFIFO: 'p', iso9660.TypeSocket: 's'}[e.Type]
	return string(typ) + os.FileMode(e.Perm & 0o777).String()[1:] + specialBits(e.Perm)
}

func specialBits(p uint32) string {
	s := ""
	if p&unix.S_ISUID != 0 {
		s += "u"
	}
	if p&unix.S_ISGID != 0 {
		s += "g"
	}
	if p&unix.S_ISVTX != 0 {
		s += "t"
	}
	if s != "" {
		return "+" + s
	}
	return ""
}

func isoExtract(env *Env, fs *flags) func() error {
	sync := fs.Bool("sync", false, "flush the extracted tree to disk before returning")
	workers := fs.Int("workers", 0, "goroutines creating files (0: one per CPU)")
	return func() error {
		if fs.NArg() != 2 {
			return fs.argCount("name an IMAGE and a DIR")
		}
		return extract(env, fs.Arg(0), fs.Arg(1), iso9660.ExtractOptions{Sync: *sync, Workers: *workers})
	}
}

func extract(env *Env, image, dir string, opts iso9660.ExtractOptions) error {
	start := time.Now()
	img, t, err := openTree(image)
	if err != nil {
		return err
	}
	defer img.Close()
	if err := iso9660.ExtractAtomic(img, t, dir, opts); err != nil {
		return err
	}
	var bytes int64
	for i := range t.Entries {
		if t.Entries[i].LinkTo < 0 {
			bytes += t.Entries[i].Size
		}
	}
	fmt.Fprintf(env.Stdout, "extracted %d entries (%d bytes, %s) into %s in %s\n", len(t.Entries), bytes, t.Format, dir, time.Since(start).Round(time.Millisecond))
	return nil
}

func isoVerify(env *Env, fs *flags) func() error {
	return func() error {
		if fs.NArg() < 1 || fs.NArg() > 2 {
			return fs.argCount("name an IMAGE, and its SHA256 if you wish")
		}
		return verify(env, fs.Arg(0), fs.Arg(1))
	}
}

func verify(env *Env, path, configured string) error {
	expected, from, err := rootfs.ExpectedDigest(path, configured)
	if err != nil {
		if actual, _, herr := rootfs.HashFile(path); herr == nil {
			return fmt.Errorf("%w (its sha256 is %s)", err, actual)
		}
		return err
	}
	actual, err := rootfs.Verify(path, expected, from)
	if err != nil {
		return err
	}
	img, t, err := openTree(path)
	if err != nil {
		return fmt.Errorf("digest matches but the image does not read: %w", err)
	}
	img.Close()
	fmt.Fprintf(env.Stdout, "%s: OK sha256:%s (from %s), %s, %d entries\n", path, actual, from, t.Format, len(t.Entries))
	return nil
}
