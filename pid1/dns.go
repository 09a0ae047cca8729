package pid1

import (
	"errors"
	"os"
	"path/filepath"

	"github.com/ddinit/ddinit/atomicfile"
	"github.com/ddinit/ddinit/config"
	"github.com/ddinit/ddinit/dnsforward"
	"github.com/ddinit/ddinit/network"
	"github.com/sirupsen/logrus"
)

// How containers resolve names: the namespace's resolver file names only
// ddinit's DNS forwarder, on the namespace's end of the link (not a
// loopback address, so dockerd hands it to containers as it is, and its
// embedded DNS forwards to it). `ddinit run` serves the forwarder from the
// distro's side, and keeps this file's search and options lines following
// the distro's.

// writeResolvConf (at boot) gives the namespace its resolver file: the
// forwarder, with the distro's search and options lines.
func writeResolvConf(cfg config.Config, root string, log *logrus.Entry) error {
	_, inner, err := network.Addrs(cfg.Subnet)
	if err != nil {
		return err
	}
	// Read as the forwarder reads it: a FIFO there, or a hung file system,
	// must not hold the boot. A file that cannot be read costs only its
	// search and options lines: the forwarder follows it, and puts them
	// in the namespace's file once it can be read.
	b, err := dnsforward.ReadFile(cfg.ResolvConf)
	if errors.Is(err, os.ErrNotExist) {
		log.WithField("path", cfg.ResolvConf).Warn("the distro has no resolver file: names will not resolve until it has one")
	} else if err != nil {
		log.WithField("path", cfg.ResolvConf).WithError(err).Warn("the distro's resolver file cannot be read: containers get no search or options lines from it until it can")
	}
	// The rename replaces a symlink the base image may have there, not
	// its target.
	return atomicfile.Write(filepath.Join(root, "etc/resolv.conf"), dnsforward.NamespaceFile(inner.Addr(), dnsforward.ParseConf(b)), 0o644)
}
