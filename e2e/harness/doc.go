// Package harness is the end-to-end test harness: it starts `ddinit run`
// under test as a real boot — the real binary (bin/ddinit, DDINIT_BINARY,
// or one named per instance) on the real images (build/docker-desktop.iso,
// build/docker.iso, the test packs), with the real containerd, runc and
// dockerd, as root — and talks to it as its clients do: the exposed
// docker socket (the docker CLI, the API, _ping), the control API and
// the ddinit CLI. It also reads what a test checks from outside: the
// process table and pid namespaces, the host's mounts, ddinit's log, and
// it makes the worlds a test boots in (version packs, a distro's network
// with its resolvers).
//
// Packages e2e (the behaviour tests) and bench (the benchmarks) use it.
// It must not be imported by ddinit itself, nor reach into ddinit's
// internals: it sees ddinit only as a user and the machine do, so that
// what passes here passes on a machine (it imports ddinit's packages only
// for their wire types: control's API documents, timeline's steps). It
// asserts nothing about behaviour (the tests do); what fails a test here
// is the harness's own precondition (an artifact missing, ddinit exiting
// or not answering within a generous bound). Each Instance is stopped
// when its test ends.
package harness
