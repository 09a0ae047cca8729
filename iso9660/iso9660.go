package iso9660

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
	"unicode/utf16"
)

// ISO 9660 (ECMA-119) layout constants.
const (
	sectorSize        = 2048
	systemAreaSectors = 16
	// maxDescriptors bounds the volume descriptor set walk; real images carry
	// a handful, a hostile one could claim thousands.
	maxDescriptors = 64

	vdTypeBoot          = 0
	vdTypePrimary       = 1
	vdTypeSupplementary = 2
	vdTypePartition     = 3
	vdTypeTerminator    = 255

	dirRecordFixedLen = 33

	flagHidden      = 0x01
	flagDirectory   = 0x02
	flagAssociated  = 0x04
	flagMultiExtent = 0x80
)

// ErrFormat is wrapped by every error that means "this is not a well-formed
// image", as opposed to an I/O failure.
var ErrFormat = errors.New("malformed ISO 9660 image")

func formatErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrFormat, fmt.Sprintf(format, args...))
}

// volumeDescriptor is the part of a primary or supplementary volume
// descriptor that the reader needs.
type volumeDescriptor struct {
	Type        byte
	Joliet      bool // supplementary descriptor with a UCS-2 escape sequence
	VolumeID    string
	BlockSize   uint32
	VolumeSize  uint32 // in logical blocks
	Root        dirRecord
	DescriptorN int // position in the descriptor set, for error messages
}

// parseVolumeDescriptor decodes one 2048-byte volume descriptor. It returns
// ok=false for descriptor types the reader does not use (boot records,
// partitions, non-Joliet supplementary descriptors).
func parseVolumeDescriptor(b []byte) (vd volumeDescriptor, ok bool, err error) {
	if len(b) < sectorSize {
		return vd, false, formatErr("volume descriptor is %d bytes, want %d", len(b), sectorSize)
	}
	if !bytes.Equal(b[1:6], []byte("CD001")) {
		return vd, false, formatErr("volume descriptor has identifier %q, want \"CD001\"", printable(b[1:6]))
	}
	vd.Type = b[0]
	if vd.Type != vdTypePrimary && vd.Type != vdTypeSupplementary {
		return vd, false, nil
	}
	if vd.Type == vdTypeSupplementary {
		esc := b[88:120]
		vd.Joliet = bytes.Contains(esc, []byte("%/@")) || bytes.Contains(esc, []byte("%/C")) || bytes.Contains(esc, []byte("%/E"))
		if !vd.Joliet {
			return vd, false, nil
		}
	}
	if vd.Joliet {
		vd.VolumeID = decodeUCS2(b[40:72])
	} else {
		vd.VolumeID = string(bytes.TrimRight(b[40:72], " \x00"))
	}
	vd.VolumeSize = binary.LittleEndian.Uint32(b[80:84])
	vd.BlockSize = uint32(binary.LittleEndian.Uint16(b[128:130]))
	switch vd.BlockSize {
	case 512, 1024, 2048:
	default:
		return vd, false, formatErr("logical block size %d is not 512, 1024 or 2048", vd.BlockSize)
	}
	root, err := parseDirRecord(b[156:190])
	if err != nil {
		return vd, false, fmt.Errorf("root directory record: %w", err)
	}
	if root.Flags&flagDirectory == 0 {
		return vd, false, formatErr("root directory record is not flagged as a directory")
	}
	vd.Root = root
	return vd, true, nil
}

// dirRecord is one decoded ISO 9660 directory record.
type dirRecord struct {
	Len       int // total record length in bytes
	Extent    uint32
	Size      uint32
	Recorded  time.Time
	Flags     byte
	Name      []byte // raw file identifier
	SystemUse []byte // system use area (SUSP entries), aliases the input
}

func (r dirRecord) isDir() bool { return r.Flags&flagDirectory != 0 }

// isSelf and isParent report the special "." and ".." identifiers.
func (r dirRecord) isSelf() bool   { return len(r.Name) == 1 && r.Name[0] == 0 }
func (r dirRecord) isParent() bool { return len(r.Name) == 1 && r.Name[0] == 1 }

// parseDirRecord decodes the directory record at the start of b. b may hold
// more bytes after the record.
func parseDirRecord(b []byte) (dirRecord, error) {
	var r dirRecord
	if len(b) < 1 || b[0] == 0 {
		return r, formatErr("empty directory record")
	}
	r.Len = int(b[0])
	if r.Len < dirRecordFixedLen {
		return r, formatErr("directory record length %d is shorter than the %d-byte header", r.Len, dirRecordFixedLen)
	}
	if r.Len > len(b) {
		return r, formatErr("directory record length %d runs past its sector (%d bytes left)", r.Len, len(b))
	}
	extAttrLen := b[1]
	if extAttrLen != 0 {
		// Extended attribute records precede the file data; xorriso never
		// writes them and we do not interpret them, but the data offset moves.
		return r, formatErr("extended attribute records are not supported (length %d)", extAttrLen)
	}
	r.Extent = binary.LittleEndian.Uint32(b[2:6])
	r.Size = binary.LittleEndian.Uint32(b[10:14])
	r.Recorded = decodeShortTime(b[18:25])
	r.Flags = b[25]
	nameLen := int(b[32])
	if dirRecordFixedLen+nameLen > r.Len {
		return r, formatErr("file identifier length %d does not fit in a %d-byte record", nameLen, r.Len)
	}
	r.Name = b[dirRecordFixedLen : dirRecordFixedLen+nameLen]
	su := dirRecordFixedLen + nameLen
	if nameLen%2 == 0 {
		su++ // padding byte after an even-length identifier
	}
	if su < r.Len {
		r.SystemUse = b[su:r.Len]
	}
	return r, nil
}

// decodeShortTime decodes the 7-byte recording date of a directory record
// (and of Rock Ridge TF in short form). An all-zero date is the zero time.
func decodeShortTime(b []byte) time.Time {
	if len(b) < 7 || (b[0] == 0 && b[1] == 0 && b[2] == 0) {
		return time.Time{}
	}
	month, day := int(b[1]), int(b[2])
	if month < 1 || month > 12 || day < 1 || day > 31 {
		return time.Time{}
	}
	zone := time.FixedZone("", int(int8(b[6]))*15*60)
	return time.Date(1900+int(b[0]), time.Month(month), day, int(b[3]), int(b[4]), int(b[5]), 0, zone).UTC()
}

// decodeLongTime decodes the 17-byte "YYYYMMDDHHMMSScc" + offset form.
func decodeLongTime(b []byte) time.Time {
	if len(b) < 17 {
		return time.Time{}
	}
	var v [7]int
	widths := [7]int{4, 2, 2, 2, 2, 2, 2}
	pos := 0
	for i, w := range widths {
		for _, c := range b[pos : pos+w] {
			if c < '0' || c > '9' {
				return time.Time{}
			}
			v[i] = v[i]*10 + int(c-'0')
		}
		pos += w
	}
	if v[0] == 0 || v[1] < 1 || v[1] > 12 || v[2] < 1 || v[2] > 31 {
		return time.Time{}
	}
	zone := time.FixedZone("", int(int8(b[16]))*15*60)
	return time.Date(v[0], time.Month(v[1]), v[2], v[3], v[4], v[5], v[6]*10_000_000, zone).UTC()
}

// decodeUCS2 decodes a big-endian UCS-2/UTF-16 Joliet identifier.
func decodeUCS2(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		u = append(u, uint16(b[i])<<8|uint16(b[i+1]))
	}
	s := string(utf16.Decode(u))
	return trimRightSpaceNUL(s)
}

func trimRightSpaceNUL(s string) string {
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == 0) {
		s = s[:len(s)-1]
	}
	return s
}

// plainName turns an ISO 9660 file identifier into a file name: the
// ";version" suffix and a dangling "." are dropped and the name is lowered
// (what Linux's default map=normal shows).
func plainName(id []byte, isDir bool) string {
	s := string(id)
	if !isDir {
		if i := bytes.LastIndexByte(id, ';'); i >= 0 {
			s = s[:i]
		}
		s = trimSuffixDot(s)
	}
	return toLowerASCII(s)
}

// jolietName is plainName for a UCS-2 identifier, without case folding.
func jolietName(id []byte, isDir bool) string {
	s := decodeUCS2(id)
	if !isDir {
		if i := lastIndexRune(s, ';'); i >= 0 {
			s = s[:i]
		}
		s = trimSuffixDot(s)
	}
	return s
}

func trimSuffixDot(s string) string {
	if len(s) > 1 && s[len(s)-1] == '.' {
		return s[:len(s)-1]
	}
	return s
}

func lastIndexRune(s string, r byte) int {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == r {
			return i
		}
	}
	return -1
}

func toLowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// printable renders raw bytes from an image for an error message.
func printable(b []byte) string {
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			out = append(out, '?')
			continue
		}
		out = append(out, c)
	}
	return string(out)
}
