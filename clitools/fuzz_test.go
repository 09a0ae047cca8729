package clitools

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzReadStates reads what any distro may have written as a state file:
// never a panic, a state only for a file that names its own distro, and
// what is read is what `ddinit status` can print.
func FuzzReadStates(f *testing.F) {
	f.Add([]byte(`{"distro":"Ubuntu","tools":"docker 29.10.0","linked":["/usr/local/bin/docker"],"leftAlone":[{"tool":"docker-compose","path":"/usr/libexec/docker/cli-plugins/docker-compose"}],"checked":"2026-12-07T00:00:00Z"}`))
	f.Add([]byte(`{"distro":"Ubuntu","linked":null,"made":["/usr/local/lib/docker"]}`))
	f.Add([]byte(`{"distro":"Other"}`))
	f.Add([]byte(`{"distro":"Ubuntu","checked":"yesterday"}`))
	f.Add([]byte("\x00\xff{"))
	f.Fuzz(func(t *testing.T, b []byte) {
		shared := t.TempDir()
		dir := filepath.Join(shared, testStates)
		os.MkdirAll(dir, 0o755)
		os.WriteFile(filepath.Join(dir, "Ubuntu.json"), b, 0o644)
		states, err := ReadStates(shared, testStates)
		if err != nil || len(states) != 1 {
			t.Fatalf("%v %+v", err, states)
		}
		s := states[0]
		if s.Distro != "Ubuntu" {
			t.Fatalf("a state for distro %q from Ubuntu.json", s.Distro)
		}
		if s.Err != "" && (len(s.Linked) != 0 || len(s.LeftAlone) != 0 || s.Tools != "") {
			t.Fatalf("an unreadable state with content: %+v", s)
		}
	})
}
