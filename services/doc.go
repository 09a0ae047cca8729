// Package services is ddinit's supervisor. It runs containerd from the
// version pack as a child of PID 1, and every service the version pack
// defines (/containers/services/<name>/config.json, an OCI runtime spec) as
// a containerd container plus task: started in dependency order, probed
// for readiness and liveness, restarted under one restart policy (shared
// with containerd) when it dies or stops answering (a silence spent
// waiting for a CPU the machine did not have is not held against it), its
// output kept in a ring buffer and a rotated JSON-lines file, and stopped
// in reverse order.
// A service's container outlives its runs (each start makes only a task)
// while its spec is unchanged. It decides health: what is ready, what is
// failing and why.
//
// It must not mount, pivot or reap: PID-1 duties belong to package pid1,
// which hands the supervisor a Spawner that starts processes it can wait
// for without racing the reaper.
package services
