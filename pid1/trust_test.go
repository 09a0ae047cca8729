package pid1

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ddinit/ddinit/config"
	"github.com/sirupsen/logrus"
)

// The distros' access to container addresses is opened once per PID 1,
// whichever of the boot's first ready and a later supervisor's comes
// first: the pack's iptables runs for the first trustOnce only.
func TestTrustOnceRunsIptablesOnce(t *testing.T) {
	dir := t.TempDir()
	calls := filepath.Join(dir, "calls")
	// A stand-in for the pack's iptables: it logs each call, knows no
	// rule (-C fails) and accepts the rest.
	fake := "#!/bin/sh\necho \"$(basename $0) $*\" >> " + calls + "\ncase \" $* \" in *\" -C \"*) exit 1;; esac\nexit 0\n"
	for _, tool := range []string{"iptables", "ip6tables"} {
		if err := os.WriteFile(filepath.Join(dir, tool), []byte(fake), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", dir+":/usr/bin:/bin")
	log := logrus.NewEntry(logrus.New())
	in := &pid1{cfg: config.Config{Subnet: "100.64.249.0/30", Subnet6: "fd64:100:249::/64"}, log: log, reaper: NewReaper(log)}

	in.trustOnce()
	first, _ := os.ReadFile(calls)
	in.trustOnce()
	in.trustOnce()
	after, _ := os.ReadFile(calls)

	lines := strings.Split(strings.TrimSpace(string(first)), "\n")
	var inserts []string
	for _, l := range lines {
		if strings.Contains(l, " -I DOCKER-USER 1 ") {
			inserts = append(inserts, l)
		}
	}
	if len(inserts) != 2 || !strings.HasPrefix(inserts[0], "iptables ") || !strings.Contains(inserts[0], "-s 100.64.249.1/32") ||
		!strings.HasPrefix(inserts[1], "ip6tables ") || !strings.Contains(inserts[1], "-s fd64:100:249::1/128") {
		t.Fatalf("the first trustOnce should insert one rule per family, it ran:\n%s", first)
	}
	if string(after) != string(first) {
		t.Fatalf("a later trustOnce ran the pack's iptables again:\n%s", strings.TrimPrefix(string(after), string(first)))
	}
}
