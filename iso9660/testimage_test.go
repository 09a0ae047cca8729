package iso9660

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// A small ISO 9660 writer for images xorriso will not make: hostile names,
// loops, extents past the end, multi-extent files. Layout is fixed so tests
// can point SUSP entries at known blocks: descriptors at 16-17, directories
// in preorder from block 18 (one sector each), then the extra raw blocks,
// then file data.

type tnode struct {
	id    string // ISO 9660 identifier; the Rock Ridge name goes in su
	dir   bool
	flags byte   // extra record flags (e.g. flagMultiExtent)
	su    []byte // system use area: SUSP entries
	data  []byte
	kids  []*tnode
	// extent/size override what the layout assigns when set.
	extent, size uint32
	override     bool
}

type tbuilder struct {
	root  *tnode
	rr    bool     // put SP and ER in the root's "." record
	extra [][]byte // raw blocks placed after the directories
}

const firstDirBlock = 18

func (b *tbuilder) dirs() []*tnode {
	var out []*tnode
	var walk func(n *tnode)
	walk = func(n *tnode) {
		out = append(out, n)
		for _, k := range n.kids {
			if k.dir {
				walk(k)
			}
		}
	}
	walk(b.root)
	return out
}

// extraBlock is the block number of extra[i].
func (b *tbuilder) extraBlock(i int) uint32 { return uint32(firstDirBlock + len(b.dirs()) + i) }

func (b *tbuilder) build(t testing.TB) []byte {
	dirs := b.dirs()
	block := map[*tnode]uint32{}
	for i, d := range dirs {
		block[d] = uint32(firstDirBlock + i)
	}
	next := uint32(firstDirBlock + len(dirs) + len(b.extra))
	var files []*tnode
	var collect func(n *tnode)
	collect = func(n *tnode) {
		for _, k := range n.kids {
			if k.dir {
				collect(k)
			} else {
				files = append(files, k)
			}
		}
	}
	collect(b.root)
	fileBlock := map[*tnode]uint32{}
	for _, f := range files {
		fileBlock[f] = next
		next += uint32((len(f.data) + sectorSize - 1) / sectorSize)
	}
	img := make([]byte, int(next)*sectorSize)
	for i, raw := range b.extra {
		copy(img[int(b.extraBlock(i))*sectorSize:], raw)
	}
	for _, f := range files {
		copy(img[int(fileBlock[f])*sectorSize:], f.data)
	}
	parent := map[*tnode]*tnode{b.root: b.root}
	for _, d := range dirs {
		for _, k := range d.kids {
			parent[k] = d
		}
	}
	for _, d := range dirs {
		var sec []byte
		selfSU := d.su
		if d == b.root && b.rr {
			selfSU = cat(suspSP(), suspER(), d.su)
		}
		sec = append(sec, dirRec(block[d], sectorSize, flagDirectory, []byte{0}, selfSU)...)
		sec = append(sec, dirRec(block[parent[d]], sectorSize, flagDirectory, []byte{1}, nil)...)
		for _, k := range d.kids {
			ext, size := fileBlock[k], uint32(len(k.data))
			flags := k.flags
			if k.dir {
				ext, size = block[k], sectorSize
				flags |= flagDirectory
			}
			if k.override {
				ext, size = k.extent, k.size
			}
			sec = append(sec, dirRec(ext, size, flags, []byte(k.id), k.su)...)
		}
		if len(sec) > sectorSize {
			t.Fatalf("test image: directory %q needs %d bytes, more than one sector", d.id, len(sec))
		}
		copy(img[int(block[d])*sectorSize:], sec)
	}
	pvd := img[16*sectorSize : 17*sectorSize]
	pvd[0] = vdTypePrimary
	copy(pvd[1:], "CD001")
	pvd[6] = 1
	copy(pvd[40:72], fmt.Sprintf("%-32s", "TESTIMAGE"))
	bothEndian32(pvd[80:], next)
	binary.LittleEndian.PutUint16(pvd[128:], sectorSize)
	binary.BigEndian.PutUint16(pvd[130:], sectorSize)
	copy(pvd[156:], dirRec(firstDirBlock, sectorSize, flagDirectory, []byte{0}, nil))
	term := img[17*sectorSize:]
	term[0] = vdTypeTerminator
	copy(term[1:], "CD001")
	term[6] = 1
	return img
}

func bothEndian32(b []byte, v uint32) {
	binary.LittleEndian.PutUint32(b, v)
	binary.BigEndian.PutUint32(b[4:], v)
}

func dirRec(extent, size uint32, flags byte, id, su []byte) []byte {
	n := dirRecordFixedLen + len(id)
	if len(id)%2 == 0 {
		n++
	}
	n += len(su)
	if n%2 == 1 {
		n++
	}
	if n > 255 {
		panic(fmt.Sprintf("test record of %d bytes", n))
	}
	b := make([]byte, n)
	b[0] = byte(n)
	bothEndian32(b[2:], extent)
	bothEndian32(b[10:], size)
	copy(b[18:25], []byte{123, 4, 5, 6, 7, 8, 0})
	b[25] = flags
	b[28], b[31] = 1, 1
	b[32] = byte(len(id))
	copy(b[33:], id)
	copy(b[dirRecordFixedLen+len(id)+pad(len(id)):], su)
	return b
}

func pad(idLen int) int {
	if idLen%2 == 0 {
		return 1
	}
	return 0
}

func suspEntry(sig string, data ...byte) []byte {
	return append([]byte{sig[0], sig[1], byte(4 + len(data)), 1}, data...)
}

func suspSP() []byte { return suspEntry("SP", 0xBE, 0xEF, 0) }
func suspER() []byte {
	id := "RRIP_1991A"
	data := []byte{byte(len(id)), 0, 0, 1}
	return suspEntry("ER", append(data, id...)...)
}

func suspPX(mode, nlink, uid, gid, ino uint32) []byte {
	d := make([]byte, 40)
	for i, v := range []uint32{mode, nlink, uid, gid, ino} {
		bothEndian32(d[i*8:], v)
	}
	return suspEntry("PX", d...)
}

func suspNM(flags byte, name string) []byte {
	return suspEntry("NM", append([]byte{flags}, name...)...)
}

func suspSL(flags byte, comps ...[]byte) []byte {
	d := []byte{flags}
	for _, c := range comps {
		d = append(d, c...)
	}
	return suspEntry("SL", d...)
}

func slComp(flags byte, s string) []byte { return append([]byte{flags, byte(len(s))}, s...) }

func suspCE(block, off, length uint32) []byte {
	d := make([]byte, 24)
	bothEndian32(d[0:], block)
	bothEndian32(d[8:], off)
	bothEndian32(d[16:], length)
	return suspEntry("CE", d...)
}

func suspCL(block uint32) []byte {
	d := make([]byte, 8)
	bothEndian32(d, block)
	return suspEntry("CL", d...)
}

func suspPN(high, low uint32) []byte {
	d := make([]byte, 16)
	bothEndian32(d, high)
	bothEndian32(d[8:], low)
	return suspEntry("PN", d...)
}

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// writeImage stores b in a temporary file and opens it.
func writeImage(t testing.TB, b []byte) (string, *File) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "test.iso")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := OpenFile(path)
	if err != nil {
		t.Fatalf("open test image: %v", err)
	}
	t.Cleanup(func() { f.Close() })
	return path, f
}
