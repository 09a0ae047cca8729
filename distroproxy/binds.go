package distroproxy

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ddinit/ddinit/dockerproxy"
	"github.com/ddinit/ddinit/mounts"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Where things are: under the shared tmpfs, and inside the engine.
const (
	BindsDir    = "docker-desktop-bind-mounts"
	ServicesDir = "docker-desktop/proxies"
	EngineBinds = mounts.DistroBindsTarget
	// LabelBinds is the label a container gets with its rewritten
	// sources: a JSON object from each engine path to the source sent.
	LabelBinds = "io.ddinit.proxy.binds"
)

// Binds makes and tracks one distro's binds into the shared tmpfs.
type Binds struct {
	Distro string // the WSL distro's name
	Shared string // the tmpfs every distro shares (/mnt/wsl)
	Log    logrus.FieldLogger

	mu   sync.Mutex
	made map[string]*bind // by id
}

type bind struct {
	source string
	users  map[string]bool // containers that use it
	idle   time.Time       // since when nobody uses it
}

// dir is this distro's folder in the shared tmpfs.
func (b *Binds) dir() string { return filepath.Join(b.Shared, BindsDir, b.Distro) }

// enginePath is where the engine sees the bind id.
func (b *Binds) enginePath(id string) string { return filepath.Join(EngineBinds, b.Distro, id) }

// id names a source's bind: stable, so a container made again after a
// restart finds the same path.
func id(source string) string {
	sum := sha256.Sum256([]byte(source))
	return hex.EncodeToString(sum[:8])
}

// Translate implements dockerproxy.Translator for the distro's paths:
// every absolute path is the distro's (/home/…, /tmp/…, the proxy's own
// docker socket); named volumes are left alone.
func (b *Binds) Translate(src string, kind dockerproxy.SourceKind) (string, bool, error) {
	if !filepath.IsAbs(src) {
		return "", false, nil
	}
	dst, err := b.Ensure(src, kind == dockerproxy.FromBinds)
	return dst, err == nil, err
}

// Ensure makes the bind of source (or finds it made) and returns where
// the engine sees it. A missing source is created when create is set
// (docker run -v does so on Linux) and an error otherwise.
func (b *Binds) Ensure(source string, create bool) (string, error) {
	source = filepath.Clean(source)
	st, err := os.Stat(source)
	if errors.Is(err, os.ErrNotExist) && create {
		if err := os.MkdirAll(source, 0o755); err != nil {
			return "", fmt.Errorf("create the bind source %s: %w", source, err)
		}
		st, err = os.Stat(source)
	}
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("invalid mount config for type \"bind\": bind source path does not exist: %s", source)
	}
	if err != nil {
		return "", fmt.Errorf("bind source %s: %w", source, err)
	}
	key := id(source)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.made == nil {
		b.made = map[string]*bind{}
	}
	if _, ok := b.made[key]; ok {
		return b.enginePath(key), nil
	}
	point := filepath.Join(b.dir(), key)
	if !mountedAt(point) {
		if err := makePoint(point, st.IsDir()); err != nil {
			return "", err
		}
		if err := unix.Mount(source, point, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			os.Remove(point) // the empty point just made; the bind error is what matters
			return "", fmt.Errorf("bind %s for the engine: %w", source, err)
		}
		b.Log.WithFields(logrus.Fields{"source": source, "bind": key}).Info("bound for the engine")
	}
	b.made[key] = &bind{source: source, users: map[string]bool{}, idle: time.Now()}
	return b.enginePath(key), nil
}

func makePoint(point string, dir bool) error {
	if err := os.MkdirAll(filepath.Dir(point), 0o755); err != nil {
		return fmt.Errorf("bind point %s: %w", point, err)
	}
	if dir {
		if err := os.Mkdir(point, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("bind point %s: %w", point, err)
		}
		return nil
	}
	f, err := os.OpenFile(point, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("bind point %s: %w", point, err)
	}
	return f.Close()
}

func mountedAt(point string) bool {
	table, err := mounts.ReadMountinfo("/proc/self/mountinfo")
	return err == nil && slices.ContainsFunc(table, func(m mounts.MountInfo) bool { return m.Point == point })
}

// Use records that container uses the binds among engine paths (those of
// this distro; others are ignored).
func (b *Binds) Use(container string, enginePaths []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range enginePaths {
		if bd, ok := b.made[b.ownID(p)]; ok {
			bd.users[container] = true
		}
	}
}

// ownID is the bind id of an engine path of this distro, or "".
func (b *Binds) ownID(enginePath string) string {
	rel, ok := strings.CutPrefix(enginePath, b.enginePath("")+"/")
	if !ok || strings.Contains(rel, "/") {
		return ""
	}
	return rel
}

// Forget records that container is gone and takes down the binds no
// container uses any more.
func (b *Binds) Forget(container string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for key, bd := range b.made {
		if bd.users[container] {
			delete(bd.users, container)
			if len(bd.users) == 0 {
				b.takeDown(key)
			}
		}
	}
}

// Sweep takes down the binds no container has used for at least grace:
// made for a create that failed, or for one from Windows that never came.
func (b *Binds) Sweep(grace time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for key, bd := range b.made {
		if len(bd.users) == 0 && time.Since(bd.idle) >= grace {
			b.takeDown(key)
		}
	}
}

// takeDown unmounts and removes the bind point key, under b.mu. Only this
// distro's own bind points, which it made: never anything else under the
// shared tmpfs.
func (b *Binds) takeDown(key string) {
	bd := b.made[key]
	point := filepath.Join(b.dir(), key)
	if err := unix.Unmount(point, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
		b.Log.WithError(err).WithField("bind", key).Warn("bind not taken down")
		return
	}
	os.Remove(point) // an empty point left behind costs nothing; the unmount mattered
	delete(b.made, key)
	b.Log.WithFields(logrus.Fields{"source": bd.source, "bind": key}).Info("bind taken down: no container uses it")
}

// Sources is what the binds of this distro are, by engine path.
func (b *Binds) Sources() map[string]string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[string]string{}
	for key, bd := range b.made {
		out[b.enginePath(key)] = bd.source
	}
	return out
}
