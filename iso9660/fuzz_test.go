package iso9660

import (
	"bytes"
	"encoding/binary"
	"os"
	"testing"
)

// The fuzz targets feed the parsers hostile bytes; the property is always
// the same: an error or a result, never a panic, a hang or a huge
// allocation. Their corpora live in testdata/fuzz and run as plain tests.

func FuzzVolumeDescriptor(f *testing.F) {
	pvd := make([]byte, sectorSize)
	pvd[0] = vdTypePrimary
	copy(pvd[1:], "CD001")
	binary.LittleEndian.PutUint16(pvd[128:], sectorSize)
	copy(pvd[156:], dirRec(18, sectorSize, flagDirectory, []byte{0}, nil))
	f.Add(pvd)
	svd := bytes.Clone(pvd)
	svd[0] = vdTypeSupplementary
	copy(svd[88:], "%/E")
	f.Add(svd)
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < sectorSize {
			b = append(b, make([]byte, sectorSize-len(b))...)
		}
		vd, ok, err := parseVolumeDescriptor(b)
		if err == nil && ok && vd.BlockSize == 0 {
			t.Fatal("accepted a zero block size")
		}
	})
}

func FuzzDirectoryRecord(f *testing.F) {
	f.Add(dirRec(20, 2048, flagDirectory, []byte("DIR"), nil))
	f.Add(dirRec(21, 5, 0, []byte("FILE.TXT;1"), cat(suspPX(modeFile, 1, 0, 0, 1), suspNM(0, "file.txt"))))
	f.Add([]byte{34, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseDirRecord(b)
		if err != nil {
			return
		}
		if r.Len > len(b) || len(r.Name)+dirRecordFixedLen > r.Len {
			t.Fatalf("record of %d bytes claims %d with a %d-byte name", len(b), r.Len, len(r.Name))
		}
		_ = plainName(r.Name, r.isDir())
		_ = jolietName(r.Name, r.isDir())
	})
}

func FuzzSUSP(f *testing.F) {
	f.Add(cat(suspPX(modeFile, 1, 0, 0, 1), suspNM(0, "name"), suspSL(0, slComp(slRoot, ""), slComp(0, "etc"), slComp(slContinue, "pass"))), 0)
	f.Add(cat(suspNM(nmContinue, "a"), suspCE(0, 0, 40)), 0)
	f.Add(cat(suspSP(), suspER(), suspCL(3), suspPN(1, 3), suspEntry("RE"), suspEntry("TF", tfModify|tfLongForm, '2', '0', '2', '4', '0', '1', '0', '2', '0', '3', '0', '4', '0', '5', '0', '6', 0)), 0)
	f.Fuzz(func(t *testing.T, area []byte, skip int) {
		// Continuation areas come from the same bytes, so CE entries can
		// point anywhere in them, themselves included.
		readCE := func(block, offset, length uint32) ([]byte, error) {
			start := uint64(block)*64 + uint64(offset)
			if start > uint64(len(area)) || uint64(length) > uint64(len(area))-start {
				return nil, formatErr("out of range")
			}
			return area[start : start+uint64(length)], nil
		}
		var rr rockRidge
		if err := parseSUSP(area, skip&0xff, readCE, &rr); err != nil {
			return
		}
		if len(rr.Name) > maxNameBytes || len(rr.Target) > maxTargetBytes+255 {
			t.Fatalf("name %d bytes, target %d bytes: limits not enforced", len(rr.Name), len(rr.Target))
		}
	})
}

// FuzzImage runs the whole reader over a small image.
func FuzzImage(f *testing.F) {
	b := rrRoot(rrFile("A.;1", "a", "hello"), rrDir("D", "d", rrFile("B.;1", "b", "world"))).build(f)
	f.Add(b)
	if seed, err := os.ReadFile("testdata/small.iso"); err == nil {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		img, err := Open(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		tree, err := img.Walk()
		if err != nil {
			return
		}
		for _, e := range tree.Entries[1:] {
			if checkName(e.Name) != nil {
				t.Fatalf("walk accepted the unsafe name %q", e.Name)
			}
			for _, x := range e.Extents {
				if x.Offset+x.Length > int64(len(b)) {
					t.Fatalf("extent past the end accepted: %+v", x)
				}
			}
		}
	})
}
