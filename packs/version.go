package packs

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// EngineVersion is a dockerd version as ParseEngineVersion reads it: the
// upstream release (20.10.24) and, for a pre-release, which one.
type EngineVersion struct {
	Release []int
	// Pre orders a pre-release before its release: 0 for a release,
	// -1 rc, -2 beta, -3 alpha; PreNumber is its number (rc.2: 2).
	Pre, PreNumber int
}

// preReleases are the pre-release words read, and their order.
var preReleases = map[string]int{"alpha": -3, "beta": -2, "rc": -1}

// ErrUnreadableVersion is the kind of every error of ParseEngineVersion.
var ErrUnreadableVersion = errors.New("not a dockerd version")

// ParseEngineVersion reads a dockerd version as packages and builds spell
// it, and refuses what it cannot read rather than guess:
//
//   - the upstream release: at least MAJOR.MINOR, digits and dots
//     ("20.10", "20.10.24"); a missing field is 0 (20.10 is 20.10.0);
//   - before it, a leading "v" (a git tag: v20.10.24) or a Debian epoch
//     ("5:20.10.24", Docker's own packages), which is not compared: it
//     orders a distribution's packages, not what dockerd writes;
//   - after it, in any number: an edition, "-ce", "~ce" or ".ce" (also
//     "ee": Docker's 17.03–18.09 releases and their RPMs, 18.06.1.ce-3);
//     a Debian repack, "~ds1", "~dfsg1"; one pre-release, "-rc.1", "-rc1",
//     "~rc1", "-beta.2", "-alpha" (before its release: 24.0.0-rc.1 is older
//     than 24.0.0);
//   - then, ending it: a packager's revision, "-" or "~" and a digit
//     ("-1", "-0ubuntu1~22.04.3", "~3-0~debian-bookworm"), or "+" and
//     anything ("+dfsg1-1+deb12u1+b6", semver's build metadata): neither
//     changes the upstream release.
//
// Anything else ("", "unknown", "20", "20.10.x", "20.10.24-dirty",
// " 20.10.24") is an error of kind ErrUnreadableVersion.
func ParseEngineVersion(s string) (EngineVersion, error) {
	var v EngineVersion
	bad := func(why string) (EngineVersion, error) {
		return EngineVersion{}, fmt.Errorf("%w: %q %s (want MAJOR.MINOR[.PATCH…], e.g. 20.10.24, v20.10.24, 20.10.24+dfsg1-1, 18.06.1-ce, 24.0.0-rc.1)", ErrUnreadableVersion, s, why)
	}
	if s == "" {
		return v, fmt.Errorf("%w: none is known", ErrUnreadableVersion)
	}
	rest := s
	if epoch, after, ok := strings.Cut(rest, ":"); ok {
		if digits(epoch) == 0 || digits(epoch) != len(epoch) {
			return bad("has an epoch that is not a number")
		}
		rest = after
	} else {
		rest = strings.TrimPrefix(rest, "v")
	}
	for {
		n := digits(rest)
		if n == 0 {
			return bad("does not start with a number")
		}
		f, err := strconv.Atoi(rest[:n])
		if err != nil {
			return bad("has a number too large")
		}
		v.Release = append(v.Release, f)
		rest = rest[n:]
		if len(rest) < 2 || rest[0] != '.' || digits(rest[1:]) == 0 {
			break
		}
		rest = rest[1:]
	}
	if len(v.Release) < 2 {
		return bad("has no minor version")
	}
	for rest != "" {
		sep := rest[0]
		rest = rest[1:]
		switch {
		case sep == '+':
			return v, nil // build metadata, a Debian repack or update
		case sep != '-' && sep != '~' && sep != '.':
			return bad(fmt.Sprintf("has %q after the release", sep))
		case sep != '.' && digits(rest) > 0:
			return v, nil // the packager's revision
		}
		word := rest[:letters(rest)]
		rest = rest[len(word):]
		switch {
		case word == "ce" || word == "ee":
		case (word == "ds" || word == "dfsg") && sep == '~':
			rest = rest[digits(rest):]
		case preReleases[word] != 0 && sep != '.' && v.Pre == 0:
			v.Pre = preReleases[word]
			if len(rest) > 1 && rest[0] == '.' && digits(rest[1:]) > 0 {
				rest = rest[1:]
			}
			if n := digits(rest); n > 0 {
				num, err := strconv.Atoi(rest[:n])
				if err != nil {
					return bad("has a number too large")
				}
				v.PreNumber, rest = num, rest[n:]
			}
		default:
			return bad(fmt.Sprintf("has %q after the release", string(sep)+word))
		}
	}
	return v, nil
}

func digits(s string) int {
	n := 0
	for n < len(s) && s[n] >= '0' && s[n] <= '9' {
		n++
	}
	return n
}

func letters(s string) int {
	n := 0
	for n < len(s) && s[n] >= 'a' && s[n] <= 'z' {
		n++
	}
	return n
}

// Compare orders two versions: negative when v is older than w, 0 when
// they are the same release, positive when v is newer.
func (v EngineVersion) Compare(w EngineVersion) int {
	for i := range max(len(v.Release), len(w.Release)) {
		a, b := field(v.Release, i), field(w.Release, i)
		if a != b {
			return cmpInt(a, b)
		}
	}
	if v.Pre != w.Pre {
		return cmpInt(v.Pre, w.Pre)
	}
	return cmpInt(v.PreNumber, w.PreNumber)
}

func field(r []int, i int) int {
	if i < len(r) {
		return r[i]
	}
	return 0
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// CompareEngines compares two dockerd versions as spelled: negative when a
// is older than b, 0 for the same release, positive when newer; an error
// (kind ErrUnreadableVersion) when either cannot be read.
func CompareEngines(a, b string) (int, error) {
	x, err := ParseEngineVersion(a)
	if err != nil {
		return 0, err
	}
	y, err := ParseEngineVersion(b)
	if err != nil {
		return 0, err
	}
	return x.Compare(y), nil
}

// DowngradeError is why a pack's dockerd may not run on a data store
// without force: it is older than a dockerd that ran there, or one of the
// two versions cannot be read (and so cannot be known not to be older).
type DowngradeError struct {
	Pack  string // the pack's dockerd, as spelled
	Store string // the data store's, as spelled
	// Unreadable is why they cannot be compared; nil when Pack is older.
	Unreadable error
}

func (e *DowngradeError) Error() string {
	if e.Unreadable != nil {
		return fmt.Sprintf("its dockerd %q cannot be compared with dockerd %q, which ran on this data store (%v), so it may be older", e.Pack, e.Store, e.Unreadable)
	}
	return fmt.Sprintf("its dockerd %s is older than dockerd %s, which ran on this data store: an older engine may not read what a newer one wrote", e.Pack, e.Store)
}

func (e *DowngradeError) Unwrap() error { return e.Unreadable }

// CheckEngine says whether a pack whose dockerd is pack may run on a data
// store the dockerds store ran on (as spelled; "" for one whose version
// is not known): nil when it is not older than any of them, else a
// *DowngradeError naming the pack's version and the store's it fails
// against (an unreadable one first, else the newest). A store no dockerd
// ran on (none given) takes any pack.
func CheckEngine(pack string, store ...string) error {
	if len(store) == 0 {
		return nil
	}
	p, perr := ParseEngineVersion(pack)
	var newer *DowngradeError
	var newest EngineVersion
	for _, s := range store {
		v, err := ParseEngineVersion(s)
		switch {
		case err != nil:
			return &DowngradeError{Pack: pack, Store: s, Unreadable: err}
		case perr != nil:
			return &DowngradeError{Pack: pack, Store: s, Unreadable: perr}
		case p.Compare(v) < 0 && (newer == nil || v.Compare(newest) > 0):
			newer, newest = &DowngradeError{Pack: pack, Store: s}, v
		}
	}
	if newer != nil {
		return newer
	}
	return nil
}
