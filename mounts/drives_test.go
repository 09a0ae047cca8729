package mounts

import (
	"os"
	"path/filepath"
	"testing"
)

func TestDrivesFromMountinfo(t *testing.T) {
	mi := filepath.Join(t.TempDir(), "mountinfo")
	os.WriteFile(mi, []byte(`22 27 0:21 / /proc rw - proc proc rw
80 60 0:50 / /mnt/host/c rw,noatime - 9p C:\134 rw,aname=drvfs;path=C:\;uid=0
81 60 0:51 / /mnt/host/d rw,noatime - 9p D:\134 rw,aname=drvfs;path=D:\
82 60 0:52 / /mnt/host/wsl rw - tmpfs none rw
83 60 0:53 / /mnt/host/c/sub rw - tmpfs none rw
84 60 0:54 / /mnt/hostile/e rw - tmpfs none rw
85 60 0:55 / /mnt/host/with\040space rw - tmpfs none rw
`), 0o644)
	drives, err := Drives(mi, "/mnt/host/")
	if err != nil {
		t.Fatal(err)
	}
	if len(drives) != 2 || drives[0].Letter != "c" || drives[1].Letter != "d" || drives[0].FSType != "9p" || drives[1].Path != "/mnt/host/d" {
		t.Fatalf("drives %+v", drives)
	}
	if unescapeMountPath(`/a\040b`) != "/a b" {
		t.Fatal("mountinfo escapes")
	}
}
