package iso9660

import (
	"encoding/binary"
	"time"
)

// Limits that keep a hostile image from costing unbounded time or memory.
const (
	maxContinuations = 64   // CE hops per directory record
	maxNameBytes     = 1024 // NM pieces put together (Linux allows 255; we refuse later)
	maxTargetBytes   = 4096 // SL target, PATH_MAX
)

// rockRidge holds what the System Use Sharing Protocol entries of one
// directory record say about the file.
type rockRidge struct {
	// SUSP
	SP     bool // "SP" indicator (valid only in the root's "." record)
	SPSkip int  // bytes to skip at the start of every system use area
	ER     bool // an extension reference was seen

	// Rock Ridge
	HasPX    bool
	Mode     uint32
	Nlink    uint32
	UID, GID uint32
	HasInode bool
	Inode    uint64

	HasPN            bool
	DevHigh, DevLow  uint32
	HasNM            bool
	Name             []byte
	nameContinues    bool
	HasSL            bool
	Target           []byte
	targetNeedsSep   bool
	targetContinues  bool
	Mtime, Atime     time.Time
	Ctime            time.Time
	HasCL, HasPL, RE bool
	ChildLink        uint32 // CL: where a relocated directory really lives
	ParentLink       uint32 // PL: the real parent of a relocated directory
}

// continuationReader fetches a SUSP continuation area (CE entry).
type continuationReader func(block, offset, length uint32) ([]byte, error)

// parseSUSP decodes the entries of one system use area and every
// continuation area it chains to. skip is the SP skip length.
func parseSUSP(area []byte, skip int, readCE continuationReader, rr *rockRidge) error {
	if skip > 0 {
		if skip >= len(area) {
			return nil
		}
		area = area[skip:]
	}
	type ceKey struct{ block, offset uint32 }
	var seen map[ceKey]bool
	for hops := 0; ; hops++ {
		next, hasNext, err := parseSUSPArea(area, rr)
		if err != nil {
			return err
		}
		if !hasNext {
			break
		}
		if hops >= maxContinuations {
			return formatErr("more than %d SUSP continuation areas (CE loop?)", maxContinuations)
		}
		k := ceKey{next[0], next[1]}
		if seen == nil {
			seen = make(map[ceKey]bool)
		}
		if seen[k] {
			return formatErr("SUSP continuation area at block %d offset %d is reached twice (CE loop)", k.block, k.offset)
		}
		seen[k] = true
		if readCE == nil {
			return formatErr("SUSP continuation area at block %d cannot be read here", k.block)
		}
		area, err = readCE(next[0], next[1], next[2])
		if err != nil {
			return err
		}
	}
	if rr.nameContinues {
		return formatErr("Rock Ridge NM name ends with its CONTINUE flag set")
	}
	return nil
}

// parseSUSPArea decodes the entries of one area. It returns the CE entry's
// block, offset and length when the area continues elsewhere.
func parseSUSPArea(area []byte, rr *rockRidge) (ce [3]uint32, hasCE bool, err error) {
	for len(area) >= 4 {
		sig := string(area[:2])
		n := int(area[2])
		if n == 0 {
			break // zero padding up to the end of the record
		}
		if n < 4 {
			return ce, false, formatErr("SUSP entry %q has length %d, shorter than its header", printable(area[:2]), n)
		}
		if n > len(area) {
			return ce, false, formatErr("SUSP entry %q has length %d but only %d bytes remain", printable(area[:2]), n, len(area))
		}
		e := area[:n]
		area = area[n:]
		switch sig {
		case "ST":
			return ce, hasCE, nil
		case "CE":
			if n < 28 {
				return ce, false, formatErr("SUSP CE entry is %d bytes, want 28", n)
			}
			ce = [3]uint32{le32(e[4:]), le32(e[12:]), le32(e[20:])}
			hasCE = true
		case "SP":
			if n < 7 || e[4] != 0xBE || e[5] != 0xEF {
				return ce, false, formatErr("SUSP SP entry lacks its 0xBEEF check bytes")
			}
			rr.SP = true
			rr.SPSkip = int(e[6])
		case "ER":
			rr.ER = true
		case "PX":
			if n < 36 {
				return ce, false, formatErr("Rock Ridge PX entry is %d bytes, want 36 or 44", n)
			}
			rr.HasPX = true
			rr.Mode = le32(e[4:])
			rr.Nlink = le32(e[12:])
			rr.UID = le32(e[20:])
			rr.GID = le32(e[28:])
			if n >= 44 {
				rr.HasInode = true
				rr.Inode = uint64(le32(e[36:]))
			}
		case "PN":
			if n < 20 {
				return ce, false, formatErr("Rock Ridge PN entry is %d bytes, want 20", n)
			}
			rr.HasPN = true
			rr.DevHigh = le32(e[4:])
			rr.DevLow = le32(e[12:])
		case "NM":
			if err := rr.addName(e); err != nil {
				return ce, false, err
			}
		case "SL":
			if err := rr.addLink(e); err != nil {
				return ce, false, err
			}
		case "TF":
			rr.addTimes(e)
		case "CL":
			if n < 12 {
				return ce, false, formatErr("Rock Ridge CL entry is %d bytes, want 12", n)
			}
			rr.HasCL = true
			rr.ChildLink = le32(e[4:])
		case "PL":
			if n < 12 {
				return ce, false, formatErr("Rock Ridge PL entry is %d bytes, want 12", n)
			}
			rr.HasPL = true
			rr.ParentLink = le32(e[4:])
		case "RE":
			rr.RE = true
		}
	}
	return ce, hasCE, nil
}

// NM flags.
const (
	nmContinue = 0x01
	nmCurrent  = 0x02
	nmParent   = 0x04
)

func (rr *rockRidge) addName(e []byte) error {
	if len(e) < 5 {
		return formatErr("Rock Ridge NM entry is %d bytes, want at least 5", len(e))
	}
	flags := e[4]
	if rr.HasNM && !rr.nameContinues {
		// A second, unrelated NM: the first one stands (as Linux does).
		return nil
	}
	rr.HasNM = true
	switch {
	case flags&nmCurrent != 0:
		rr.Name = append(rr.Name, '.')
	case flags&nmParent != 0:
		rr.Name = append(rr.Name, '.', '.')
	default:
		rr.Name = append(rr.Name, e[5:]...)
	}
	if len(rr.Name) > maxNameBytes {
		return formatErr("Rock Ridge name is longer than %d bytes", maxNameBytes)
	}
	rr.nameContinues = flags&nmContinue != 0
	return nil
}

// SL component flags.
const (
	slContinue = 0x01
	slCurrent  = 0x02
	slParent   = 0x04
	slRoot     = 0x08
)

func (rr *rockRidge) addLink(e []byte) error {
	if len(e) < 5 {
		return formatErr("Rock Ridge SL entry is %d bytes, want at least 5", len(e))
	}
	if rr.HasSL && !rr.targetContinues {
		// A second symlink record that was not announced: keep the first.
		return nil
	}
	rr.HasSL = true
	rr.targetContinues = e[4]&slContinue != 0
	comps := e[5:]
	for len(comps) > 0 {
		if len(comps) < 2 {
			return formatErr("Rock Ridge SL component header is truncated")
		}
		flags, n := comps[0], int(comps[1])
		if 2+n > len(comps) {
			return formatErr("Rock Ridge SL component of %d bytes runs past its entry", n)
		}
		content := comps[2 : 2+n]
		comps = comps[2+n:]
		if flags&slRoot != 0 {
			rr.Target = append(rr.Target[:0], '/')
			rr.targetNeedsSep = false
			continue
		}
		if rr.targetNeedsSep {
			rr.Target = append(rr.Target, '/')
		}
		switch {
		case flags&slCurrent != 0:
			rr.Target = append(rr.Target, '.')
		case flags&slParent != 0:
			rr.Target = append(rr.Target, '.', '.')
		default:
			rr.Target = append(rr.Target, content...)
		}
		rr.targetNeedsSep = flags&slContinue == 0
		if len(rr.Target) > maxTargetBytes {
			return formatErr("Rock Ridge symlink target is longer than %d bytes", maxTargetBytes)
		}
	}
	return nil
}

// TF flags: which stamps follow, in this order, and their form.
const (
	tfCreation   = 0x01
	tfModify     = 0x02
	tfAccess     = 0x04
	tfAttributes = 0x08
	tfLongForm   = 0x80
)

func (rr *rockRidge) addTimes(e []byte) {
	if len(e) < 5 {
		return
	}
	flags := e[4]
	size := 7
	if flags&tfLongForm != 0 {
		size = 17
	}
	data := e[5:]
	next := func() (time.Time, bool) {
		if len(data) < size {
			return time.Time{}, false
		}
		b := data[:size]
		data = data[size:]
		if size == 17 {
			return decodeLongTime(b), true
		}
		return decodeShortTime(b), true
	}
	for bit := byte(tfCreation); bit <= 0x40; bit <<= 1 {
		if flags&bit == 0 {
			continue
		}
		t, ok := next()
		if !ok {
			return
		}
		switch bit {
		case tfModify:
			rr.Mtime = t
		case tfAccess:
			rr.Atime = t
		case tfAttributes:
			rr.Ctime = t
		}
	}
}

func le32(b []byte) uint32 { return binary.LittleEndian.Uint32(b) }
