package dockerproxy

import (
	"fmt"
	"path"
	"strings"
)

// WindowsPaths maps the bind sources a Windows client sends to where the
// engine sees the Windows drives.
type WindowsPaths struct {
	// Inside is where the drives are in the engine's namespace
	// (/run/desktop/mnt/host: C: is /run/desktop/mnt/host/c).
	Inside string
	// Mounted reports whether a drive (its lower-case letter) is mounted.
	Mounted func(letter string) bool
}

// Translate maps C:\Users\me\src, C:/Users/me/src, c:\…, /c/Users/… and
// //c/Users/… to <Inside>/c/Users/me/src. Other sources (engine paths,
// named volumes) are not for it: ok is false. A drive that is not mounted
// is an error naming the path and the drive, never an empty directory.
func (w WindowsPaths) Translate(src string, _ SourceKind) (string, bool, error) {
	var letter, rest string
	switch {
	case isDrivePath(src):
		letter, rest = src[:1], strings.ReplaceAll(src[2:], `\`, "/")
	case len(src) >= 3 && src[0] == '/' && src[1] == '/' && isLetter(src[2]) && (len(src) == 3 || src[3] == '/'):
		letter, rest = src[2:3], src[3:] // //c/Users/…
	case len(src) >= 2 && src[0] == '/' && isLetter(src[1]) && (len(src) == 2 || src[2] == '/'):
		letter, rest = src[1:2], src[2:] // /c/Users/…
	default:
		return "", false, nil
	}
	letter = strings.ToLower(letter)
	if w.Mounted != nil && !w.Mounted(letter) {
		return "", false, fmt.Errorf("%s is on drive %s:, which is not mounted in the docker-desktop distro (share the drive, or check that WSL mounts it under the automount root)", src, strings.ToUpper(letter))
	}
	return path.Join(w.Inside, letter, path.Clean("/"+rest)), true, nil
}
