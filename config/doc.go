// Package config is `ddinit run`'s configuration as the user gives it
// (flags, the --config file): its fields and defaults, their validation
// (a config that cannot boot is refused naming the field), the restart and
// liveness policies it turns into the supervisor's, and the fixed paths
// and names the distros rely on (where the shared sockets and the binary
// are published).
//
// It must not hold what ddinit decides at run time (the pack chosen, the
// marks of a boot: package wire's Handoff) nor read anything but the
// config file.
package config
