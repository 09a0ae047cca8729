// Package timeline records a boot as the events ddinit's processes see
// happen (PID 1 started, containerd answering, dockerd's task started, a
// line dockerd logged, the first answer through an exposed socket), each
// with the wall-clock time it was seen: both processes share the kernel's
// clock, so their marks merge into one list. Every step of the timeline is
// the time between two observed events; none is computed as a remainder.
//
// It only keeps and orders marks. It must not decide what is marked (its
// callers do) or reach into other packages.
package timeline
