// Package memtrim hands memory back to the kernel once a long-lived
// process has finished its busy start: the heap the Go runtime still holds,
// and the page-table entries mapping the parts of the executable that the
// start touched.
//
// ddinit is one static binary run twice (`ddinit run` and PID 1) that then
// idles for hours. The kernel maps an executable's pages into a process in
// large windows (fault-around, large folios), so after a boot most of the
// 17 MB image counts as resident in each process although the idle loop
// uses a small part of it. Dropping those mappings costs nothing but minor
// faults: the pages stay in the page cache, shared, and the ones the idle
// path needs come back on first use.
package memtrim
