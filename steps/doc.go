// Package steps runs a life as a table of named steps, each returning its
// undo: ddinit run's life in the distro and PID 1's boot are such tables,
// and PID 1's shutdown is the undo of its boot. A step that fails stops
// the table (an optional one is logged and passed); what the steps set up
// is undone newest first, each undo once, whether the table ended or
// failed.
//
// It owns the order, the logging of each step with its duration, and the
// undos; and Group, the goroutines a life starts, each given the life's
// context and awaited when it ends. It must not know what a step does: the tables are their owners'.
package steps
