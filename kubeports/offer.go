package kubeports

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"

	"github.com/ddinit/ddinit/kubeapi"
	"github.com/ddinit/ddinit/mounts"
	"github.com/ddinit/ddinit/regularfile"
	"github.com/sirupsen/logrus"
)

// offerMode is the offered kubeconfig's: it holds the cluster's admin
// credentials, so root and the docker group only, as the docker socket.
const offerMode = 0o640

// offer is the admin kubeconfig offered to the distros: shared/rel, a
// copy of the data store's, written whole (one rename) beneath shared
// without following a symlink.
type offer struct {
	shared string // the tmpfs every distro shares; "": none
	rel    string // below it (config.SharedKubeconfig)
	group  func() (int, error)
	log    logrus.FieldLogger

	groupTold bool // that there is no docker group was logged
}

// put offers the kubeconfig at src, unless what is offered holds it
// already: written when missing or different (a reset of the cluster
// makes new credentials).
func (o *offer) put(src string) error {
	if !o.sharedExists() {
		return nil
	}
	b, err := regularfile.Read(src, kubeapi.MaxKubeconfigBytes)
	if err != nil {
		return fmt.Errorf("offer the admin kubeconfig to the distros: %w", err)
	}
	d, err := mounts.OpenFolder(o.shared, path.Dir(o.rel))
	if err != nil {
		return fmt.Errorf("offer the admin kubeconfig to the distros: %w", err)
	}
	defer d.Close()
	name := path.Base(o.rel)
	// Read back beneath the folder, never through a symlink: what is not
	// the same regular file is replaced.
	if have, err := d.ReadFile(name, kubeapi.MaxKubeconfigBytes); err == nil && bytes.Equal(have, b) {
		return nil
	}
	gid, err := o.group()
	if err != nil {
		gid = 0
		if !o.groupTold {
			o.groupTold = true
			o.log.WithError(err).Info("the distro has no docker group: the kubeconfig offered to the distros is root's alone")
		}
	}
	// Its owner is root: ddinit run's user.
	if err := d.WriteFileOwned(name, b, offerMode, gid); err != nil {
		return fmt.Errorf("offer the admin kubeconfig to the distros: %w", err)
	}
	o.log.WithField("path", filepath.Join(o.shared, o.rel)).Info("the Kubernetes admin kubeconfig offered to the distros")
	return nil
}

// withdraw removes the kubeconfig offered (one left by a run that
// crashed too); a folder that is not there is not made for it.
func (o *offer) withdraw() error {
	if !o.sharedExists() {
		return nil
	}
	if _, err := os.Lstat(filepath.Join(o.shared, path.Dir(o.rel))); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	d, err := mounts.OpenFolder(o.shared, path.Dir(o.rel))
	if err != nil {
		return fmt.Errorf("withdraw the admin kubeconfig: %w", err)
	}
	defer d.Close()
	name := path.Base(o.rel)
	if _, err := os.Lstat(filepath.Join(o.shared, o.rel)); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err := d.Remove(name); err != nil {
		return fmt.Errorf("withdraw the admin kubeconfig: %w", err)
	}
	o.log.WithField("path", filepath.Join(o.shared, o.rel)).Info("the Kubernetes admin kubeconfig withdrawn from the distros")
	return nil
}

// sharedExists reports the shared tmpfs is there (WSL's; not on a test
// machine): without it, nothing is offered.
func (o *offer) sharedExists() bool {
	if o.shared == "" || o.rel == "" {
		return false
	}
	st, err := os.Stat(o.shared)
	return err == nil && st.IsDir()
}
