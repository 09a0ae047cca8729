// Package testutil holds what the tests of several packages share: the
// opt-in of tests that need root (as containerd's testutil.RequiresRoot:
// by an explicit variable, not by the user that runs them, so that the
// unit tests pass as any user and in a rootless user namespace, where
// uid 0 cannot mount), and the tools a test needs installed.
//
// It must not be imported by anything but tests.
package testutil
