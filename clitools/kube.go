package clitools

import (
	"errors"
	"io/fs"

	"github.com/ddinit/ddinit/kubeconfig"
	"github.com/ddinit/ddinit/mounts"
	"github.com/sirupsen/logrus"
)

// KubeState is what a distro's proxy did with the docker-desktop context
// ddinit run offers while Kubernetes runs, as the state file says it.
type KubeState struct {
	// User is whose kubeconfig it is (the distro's default user); File
	// the kubeconfig, as the distro names it (where ~/.kube/config leads
	// when it is a link written through).
	User string `json:"user,omitempty"`
	File string `json:"file,omitempty"`
	// Merged is the offer (its sha256's first 12 hex digits) whose
	// docker-desktop cluster, user and context the proxy last merged into
	// File; "" when none.
	Merged string `json:"merged,omitempty"`
	// Offered: Kubernetes is on, its context offered. Once it is off,
	// what was merged stays (kubectl then fails to connect, as with
	// Docker Desktop).
	Offered bool `json:"offered"`
	// Error is why the offer is not merged: it is unusable, or the user's
	// file is left as it is (it does not parse, a symlink is in the way).
	Error string `json:"error,omitempty"`
}

// kubeMemory is what the proxy's passes remember of the kubeconfig.
type kubeMemory struct {
	// merged is the offer (its digest) last merged into each user's
	// kubeconfig: the file is read again only when the offer changes (a
	// reset of the cluster changes its credentials), so a context the
	// user removed stays removed until then.
	merged map[string]string
	last   *KubeState
}

// reconcileKube merges the offered docker-desktop context into the
// default user's kubeconfig when the offer is new to this proxy, and
// says what became of it (nil when there is nothing to say).
func (k *Linker) reconcileKube() *KubeState {
	if k.Kubeconfig == "" {
		return nil
	}
	offer, err := k.readKubeOffer()
	if errors.Is(err, fs.ErrNotExist) {
		if last := k.kube.last; last != nil {
			st := *last
			st.Offered = false
			return &st
		}
		return nil
	}
	if err != nil {
		k.once("kube:"+err.Error(), func() { k.Log.WithError(err).Warn("the docker-desktop context offered is not merged") })
		return &KubeState{Offered: true, Error: err.Error()}
	}
	u, err := kubeconfig.DefaultUser(k.Root)
	if err != nil {
		k.once("kube:"+err.Error(), func() { k.Log.WithError(err).Warn("the docker-desktop context offered is not merged") })
		return &KubeState{Offered: true, Error: err.Error()}
	}
	if last := k.kube.last; last != nil && last.User == u.Name && last.Error == "" && k.kube.merged[u.Name] == offer.Digest {
		return last
	}
	r, err := kubeconfig.Update(k.Root, u, true, func(old []byte) ([]byte, bool, error) { return kubeconfig.Merge(old, offer) })
	st := &KubeState{User: u.Name, File: r.File, Offered: true}
	log := k.Log.WithFields(logrus.Fields{"user": u.Name, "kubeconfig": r.File})
	if err != nil {
		// Tried again on each pass (the user may mend the file), said once.
		st.Error = err.Error()
		if last := k.kube.last; last != nil && last.User == u.Name && last.File == r.File {
			st.Merged = last.Merged // an earlier offer's is still there
		}
		k.once("kube:"+err.Error(), func() { log.WithError(err).Warn("the docker-desktop context is not merged into the user's kubeconfig") })
		k.kube.last = st
		return st
	}
	if k.kube.merged == nil {
		k.kube.merged = map[string]string{}
	}
	k.kube.merged[u.Name] = offer.Digest
	st.Merged = VersionOf(offer.Digest)
	if r.Wrote {
		log.WithField("created", r.Created).Info("the docker-desktop context merged into the user's kubeconfig")
	}
	k.kube.last = st
	return st
}

// readKubeOffer reads the offered kubeconfig beneath the shared tmpfs,
// never through a symlink another distro planted there.
func (k *Linker) readKubeOffer() (kubeconfig.Offer, error) {
	d, err := mounts.OpenDir(k.Shared)
	if err != nil {
		return kubeconfig.Offer{}, err
	}
	defer d.Close()
	b, err := d.ReadPath(k.Kubeconfig, kubeconfig.MaxOfferBytes)
	if err != nil {
		return kubeconfig.Offer{}, err
	}
	return kubeconfig.ParseOffer(b)
}

// uninstallKube takes the docker-desktop entries ddinit merged (those
// with its mark) out of every user's kubeconfig it may have written in
// some run. A file it cannot edit is left as it is and said.
func (k *Linker) uninstallKube() {
	if k.Kubeconfig == "" {
		return
	}
	users, err := kubeconfig.Users(k.Root)
	if err != nil {
		k.Log.WithError(err).Warn("the docker-desktop context ddinit merged is not removed")
		return
	}
	for _, u := range users {
		r, err := kubeconfig.Update(k.Root, u, false, kubeconfig.Remove)
		log := k.Log.WithFields(logrus.Fields{"user": u.Name, "kubeconfig": r.File})
		switch {
		case err != nil:
			log.WithError(err).Warn("the docker-desktop context ddinit merged is not removed")
		case r.Wrote:
			log.Info("the docker-desktop context ddinit merged is removed")
		}
	}
}
