package errkind

import "errors"

// ErrRolledBack is a change that was applied, refused by the engine, and
// undone: what was in force before is in force again.
var ErrRolledBack = errors.New("rolled back")

// IsRolledBack reports whether err, or an error it wraps, is a change
// that was rolled back.
func IsRolledBack(err error) bool { return errors.Is(err, ErrRolledBack) }

// RolledBack is an error of kind ErrRolledBack whose text is msg alone.
func RolledBack(msg string) error { return rolledBack(msg) }

type rolledBack string

func (e rolledBack) Error() string { return string(e) }
func (e rolledBack) Unwrap() error { return ErrRolledBack }
