// Package bench holds ddinit's benchmarks (make bench, make
// bench-compare): each boots the real binary on the real images through
// package harness (or drives a package's exported API) and prints every
// figure next to a baseline measured in the same run, as a ratio; none
// asserts anything about time. Every test here skips unless DDINIT_BENCH=1
// (and, for those that boot ddinit, DDINIT_TEST_ROOT=1 as root).
//
// It must not hold behaviour tests (package e2e does) nor benchmarks that
// need a package's internals (they stay in that package: rootfs's).
package bench
