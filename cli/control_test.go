package cli

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// With nothing listening, the client commands say what to do, in one
// line, for a missing socket and for one nobody serves.
func TestClientCommandsSayDdinitIsNotRunning(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close() // the file stays, nothing accepts
	for _, sock := range []string{filepath.Join(dir, "missing.sock"), stale} {
		for _, cmd := range [][]string{{"status"}, {"logs"}, {"restart", "dockerd"}, {"stop"}, {"diagnose", "-o", filepath.Join(dir, "d.tgz")}} {
			var out, errOut bytes.Buffer
			args := append(append([]string{}, cmd...), "--control", "unix://"+sock)
			code := Main(args, &out, &errOut)
			if code != 1 || !strings.Contains(errOut.String(), "ddinit is not running") || strings.Count(strings.TrimSpace(errOut.String()), "\n") != 0 {
				t.Errorf("ddinit %s on %s: exit %d, %q", strings.Join(cmd, " "), filepath.Base(sock), code, errOut.String())
			}
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "d.tgz")); err == nil {
		t.Error("diagnose wrote an archive with nothing to ask")
	}
}
