// Package enginestate is the one state machine of the engine on demand
// (containerd and the services as one): its states, the transitions
// between them, and a Machine that holds one state and refuses a
// transition the table does not allow, waking whoever waits on a change.
//
// PID 1 owns the engine's Machine: it makes every transition (an idle
// stop, a pause, a wake, a give-back) and tells ddinit run each one over
// the wire; ddinit run's holder keeps a mirror Machine, set from those
// reports and from the few steps it takes itself (asking for a stop, for
// a wake; holding clients while PID 1 is replaced). Containerd's shim
// (process/init_state.go) is the model: states as values, transitions as
// a table, nothing implicit.
//
// It must not act on the engine, dial or tell anyone: it decides whether
// a step is allowed and remembers where the engine is.
package enginestate
