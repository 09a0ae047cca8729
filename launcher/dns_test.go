package launcher

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/ddinit/ddinit/config"
	"github.com/ddinit/ddinit/dnsforward"
	"github.com/ddinit/ddinit/network"
	"github.com/sirupsen/logrus"
)

// The distro's resolver file, and daemon.json, may be anything: a FIFO
// (whose plain open waits for a writer for ever), a socket, a directory,
// a symlink loop. The fallback copy is not made from it, and a create
// reads no "dns" from such a daemon.json — neither waits.
func TestResolverFileThatIsNoFileHoldsNothing(t *testing.T) {
	quiet := logrus.New()
	quiet.Out = io.Discard
	log := logrus.NewEntry(quiet)
	makers := map[string]func(path string) error{
		"a FIFO":         func(p string) error { return syscall.Mkfifo(p, 0o644) },
		"a directory":    func(p string) error { return os.Mkdir(p, 0o755) },
		"a symlink loop": func(p string) error { return os.Symlink(p, p) },
		"a socket": func(p string) error {
			l, err := net.Listen("unix", p)
			if err == nil {
				t.Cleanup(func() { l.Close() })
			}
			return err
		},
	}
	for kind, makeBad := range makers {
		t.Run(kind, func(t *testing.T) {
			dir := t.TempDir()
			bad := filepath.Join(dir, "bad")
			if err := makeBad(bad); err != nil {
				t.Fatal(err)
			}
			root := filepath.Join(dir, "root")
			os.MkdirAll(filepath.Join(root, "etc"), 0o755)
			os.WriteFile(filepath.Join(root, "etc/resolv.conf"), []byte("nameserver 10.9.9.9\n"), 0o644)

			// Each in a bounded time: a FIFO's plain open would never return.
			within := func(what string, fn func()) {
				t.Helper()
				done := make(chan struct{})
				go func() { fn(); close(done) }()
				select {
				case <-done:
				case <-time.After(5 * time.Second):
					t.Fatalf("%s with %s as the file did not return", what, kind)
				}
			}
			cfg := config.Config{ResolvConf: bad, Subnet: network.DefaultSubnet}
			// The namespace's file as PID 1 placed it at boot.
			_, inner, _ := network.Addrs(network.DefaultSubnet)
			b := dnsforward.NamespaceFile(inner.Addr(), dnsforward.Conf{})
			if err := placeResolvConf(root, b); err != nil {
				t.Fatal(err)
			}
			l := &launcher{cfg: cfg, log: log}
			within("the fallback copy", func() { l.fallBackResolvConf(root) })
			if b2, _ := os.ReadFile(filepath.Join(root, "etc/resolv.conf")); string(b2) != string(b) {
				t.Fatalf("the fallback replaced the namespace's file with:\n%s", b2)
			}
			var sets bool
			within("daemon.json's dns", func() { sets = daemonSetsDNS(bad) })
			if sets {
				t.Fatal("daemon.json that is no file sets DNS")
			}
		})
	}
}
