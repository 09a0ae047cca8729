package mounts

import (
	"context"
	"github.com/ddinit/ddinit/internal/testutil"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// WatchDrives reports a drive mounted and then unmounted under a plain
// (private) directory, each within moments.
func TestWatchDrivesSeesMountAndUnmount(t *testing.T) {
	testutil.RequiresRoot(t)
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "q"), 0o755)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	changes := make(chan []Drive, 8)
	go WatchDrives(ctx, root, nil, func(d []Drive) { changes <- d })
	time.Sleep(50 * time.Millisecond)
	if err := unix.Mount("tmpfs", filepath.Join(root, "q"), "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(filepath.Join(root, "q"), unix.MNT_DETACH)
	select {
	case d := <-changes:
		if len(d) != 1 || d[0].Letter != "q" {
			t.Fatalf("after the mount: %+v", d)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the mount was not reported")
	}
	if err := unix.Unmount(filepath.Join(root, "q"), 0); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-changes:
		if len(d) != 0 {
			t.Fatalf("after the unmount: %+v", d)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the unmount was not reported")
	}
}
