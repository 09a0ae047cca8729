// Package pid1 is PID 1's life in the namespaces `ddinit run` made
// (`ddinit init`). It reaps every orphan, serves the control API from its
// first moment, and boots as a table of steps with their undos (boot.go):
// data store, images, mounts (the plan of package mounts), pivot_root,
// containerd and the services; its shutdown (SIGTERM, POST /shutdown, a
// live switch, a pack on trial that failed) is the undo of its boot. It
// owns the engine on demand's state machine (engine.go: idle stop, pause,
// wake, give-back) and tells ddinit run each transition; it puts the
// settings' proxy and CAs in place for dockerd, judges dockerd's first
// start (daemon.json, a pack on trial), and answers the control API from
// what the supervisor and ddinit run report. Every goroutine it starts
// belongs to a steps.Group that its end stops and awaits.
//
// It must not hold service logic (package services), mount plans (package
// mounts), parse images (packages iso9660, rootfs) or import package
// launcher: what crosses between the two processes is package wire's.
package pid1
