package memtrim

import (
	"crypto/sha256"
	"fmt"
	"regexp"
	"testing"
)

// TestSettleDropsImagePagesAndKeepsRunning: after a busy start, the
// executable's resident pages drop, and code anywhere in the image (here a
// regexp and sha256, cold paths) still runs and gives the right answers.
func TestSettleDropsImagePagesAndKeepsRunning(t *testing.T) {
	// Touch a good part of the image first.
	for i := range 200 {
		regexp.MustCompile(fmt.Sprintf("a(b+)c%d", i)).FindString("abbbc1")
	}
	before, after, err := Settle()
	if err != nil {
		t.Fatal(err)
	}
	if before == 0 {
		t.Fatal("no resident pages of the executable before: the maps were not read")
	}
	if after >= before {
		t.Fatalf("image resident %d KB before, %d KB after: nothing dropped", before>>10, after>>10)
	}
	t.Logf("executable resident: %d KB -> %d KB", before>>10, after>>10)
	if got := regexp.MustCompile(`x(\d+)y`).FindStringSubmatch("ax42yb"); len(got) != 2 || got[1] != "42" {
		t.Fatalf("regexp after the drop: %q", got)
	}
	if sum := fmt.Sprintf("%x", sha256.Sum256([]byte("abc"))); sum != "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" {
		t.Fatalf("sha256 after the drop: %s", sum)
	}
	again, err := ImageResident()
	if err != nil || again == 0 {
		t.Fatalf("resident after running again: %d, %v (the pages should come back on use)", again, err)
	}
}
