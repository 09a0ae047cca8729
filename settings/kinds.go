package settings

import "errors"

// ErrRolledBack is the one error kind ddinit adds to containerd's
// vocabulary (github.com/containerd/errdefs: not found, invalid argument,
// conflict, unavailable, failed precondition …): a settings change that
// was applied, refused by the engine, and undone, so that what was in
// force before is in force again. Errors carry it by wrapping it; callers
// ask with errors.Is (IsRolledBack), never by matching text. Package
// control maps it to a status code.
var ErrRolledBack = errors.New("rolled back")

// IsRolledBack reports whether err, or an error it wraps, is a change
// that was rolled back.
func IsRolledBack(err error) bool { return errors.Is(err, ErrRolledBack) }

// RolledBack is an error of kind ErrRolledBack whose text is msg alone.
func RolledBack(msg string) error { return rolledBack(msg) }

type rolledBack string

func (e rolledBack) Error() string { return string(e) }
func (e rolledBack) Unwrap() error { return ErrRolledBack }
