package cli

// What ddinit status prints of files every distro can write.

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"io"

	"github.com/ddinit/ddinit/clitools"
	"github.com/ddinit/ddinit/config"
	"github.com/ddinit/ddinit/distroproxy"
	"github.com/sirupsen/logrus"
)

// "current" is a link in the shared tmpfs any distro's root can point
// elsewhere: what the manifest it names says is printed cleaned, as the
// state files' content is.
func TestStatusCleansTheToolsManifest(t *testing.T) {
	shared := t.TempDir()
	forged := filepath.Join(shared, config.SharedCLITools, "forged")
	os.MkdirAll(forged, 0o755)
	os.Symlink("forged", filepath.Join(shared, config.SharedCLITools, clitools.Current))
	os.WriteFile(filepath.Join(forged, clitools.ManifestFile), []byte(`{"components":[{"name":"docker\u001b]0;pwned\u0007\u001b[2J","version":"1\r\nNOT READY"}]}`), 0o644)
	var out strings.Builder
	printDistros(&out, shared)
	if strings.ContainsAny(out.String(), "\x1b\x07\r") {
		t.Errorf("control characters printed: %q", out.String())
	}
}

// --uninstall under a running proxy (which holds the distro's lock) is
// refused with a message saying why; bad distro names are usage errors.
func TestUninstallRefusedUnderARunningProxy(t *testing.T) {
	shared := t.TempDir()
	release, err := (&distroproxy.Binds{Distro: "U", Shared: shared, Log: logrus.New()}).Claim()
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	var stderr strings.Builder
	err = proxy(&Env{Stdout: io.Discard, Stderr: &stderr}, proxyArgs{distro: "U", shared: shared, level: "info", uninstall: true})
	if err == nil || !strings.Contains(err.Error(), "another ddinit proxy serves") {
		t.Fatalf("uninstall under a proxy: %v", err)
	}
	for _, bad := range []string{"../x", "a/b", ".."} {
		err := proxy(&Env{Stdout: io.Discard, Stderr: io.Discard}, proxyArgs{distro: bad, shared: shared, level: "info", uninstall: true})
		if err == nil {
			t.Fatalf("distro %q accepted", bad)
		}
		t.Logf("%q: %v", bad, err)
	}
}
