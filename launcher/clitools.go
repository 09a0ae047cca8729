package launcher

import (
	"os"
	"path/filepath"

	"github.com/ddinit/ddinit/clitools"
	"github.com/ddinit/ddinit/config"
	"github.com/ddinit/ddinit/rootfs"
	"github.com/sirupsen/logrus"
)

// noCLITools is the cliTools value that offers none.
const noCLITools = "none"

// offerCLITools offers the docker CLI and its plugins to every distro:
// the tools image verified and extracted in the data store's cache of its
// own (not the engine's: they ship apart), then bound read-only in the
// shared tmpfs (package clitools). Once the boot has settled: it is not on
// the way to _ping. Without an image, what an earlier run left offered is
// taken down.
func (l *launcher) offerCLITools() {
	if st, err := os.Stat(l.cfg.WSLShared); err != nil || !st.IsDir() {
		return
	}
	log := l.log.WithField("component", "cli-tools")
	image := l.cfg.CLITools
	if image == noCLITools || !exists(image) {
		if image != noCLITools {
			log.WithField("image", image).Info("no CLI tools image: the distros are offered no docker CLI")
		}
		l.withdrawCLITools()
		return
	}
	cache, err := rootfs.OpenCache(l.ds.Path("cli-tools"), log)
	if err != nil {
		log.WithError(err).Warn("the distros are offered no docker CLI")
		return
	}
	defer cache.Close()
	layer, err := cache.Ensure(rootfs.Source{Name: "CLI tools", Path: image, Digest: l.cfg.CLIToolsDigest}, true)
	if err != nil {
		log.WithError(err).Warn("the distros are offered no docker CLI")
		return
	}
	version := clitools.VersionOf(layer.Digest)
	l.mu.Lock()
	same := l.toolsOffered == version
	l.mu.Unlock()
	if same {
		return
	}
	m, err := clitools.Check(layer.Tree)
	if err == nil {
		err = clitools.Publish(l.cfg.WSLShared, config.SharedCLITools, layer.Tree, version)
	}
	if err != nil {
		log.WithError(err).Warn("the distros are offered no docker CLI")
		return
	}
	l.mu.Lock()
	l.toolsOffered = version
	l.mu.Unlock()
	// The entries of this image and the one offered before stay.
	if err := cache.Collect([]string{layer.Digest}); err != nil {
		log.WithError(err).Warn("the CLI tools cache was not tidied")
	}
	log.WithFields(logrus.Fields{"tools": m.Summary(), "at": filepath.Join(l.cfg.WSLShared, config.SharedCLITools, clitools.Current)}).Info("CLI tools offered to the distros")
}

// withdrawCLITools takes the offer down (ddinit run ends): the distros'
// links then point at nothing until the next run offers them again.
func (l *launcher) withdrawCLITools() {
	if !exists(filepath.Join(l.cfg.WSLShared, config.SharedCLITools)) {
		return
	}
	if err := clitools.Withdraw(l.cfg.WSLShared, config.SharedCLITools); err != nil {
		l.log.WithError(err).Warn("the CLI tools offer was not all taken down")
	}
	l.mu.Lock()
	l.toolsOffered = ""
	l.mu.Unlock()
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
