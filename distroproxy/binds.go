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

	"github.com/containerd/errdefs"
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

// SweepGrace is how long a bind is kept from the moment it is handed out
// with no container using it: long enough for the create it was made for
// to be answered and the engine's create event to name its container.
const SweepGrace = time.Minute

// Binds makes and tracks one distro's binds into the shared tmpfs.
type Binds struct {
	Distro string // the WSL distro's name (ValidDistro)
	Shared string // the tmpfs every distro shares (/mnt/wsl)
	Log    logrus.FieldLogger
	// Grace is how long a bind handed out is kept for its container
	// (SweepGrace when zero).
	Grace time.Duration

	mu   sync.Mutex
	made map[string]*bind // by id
	// strays are the entries of the distro's folder that are not binds
	// the proxy made, already logged.
	strays map[string]bool
}

type bind struct {
	source string          // as the client sent it
	users  map[string]bool // containers that use it
	// holds counts the creates it was handed out for whose container has
	// not been named yet; handedOut is the last time.
	holds     int
	handedOut time.Time
}

// idle reports whether nothing keeps the bind: no container uses it and
// no create it was handed out for is pending (or the grace has passed).
func (bd *bind) idle(grace time.Duration) bool {
	return len(bd.users) == 0 && (bd.holds == 0 || time.Since(bd.handedOut) >= grace)
}

// maxDistroName bounds a distro's name: it names a folder and a state
// file (<name>.json, written as .tmp-<12 hex>-<name>.json) in a file
// system whose names end at 255 bytes.
const maxDistroName = 200

// ValidDistro checks a WSL distro's name before it names a folder or a
// file: not empty, no slash, not starting with a dot (hidden, and . and
// ..), at most maxDistroName bytes.
func ValidDistro(name string) error {
	if name == "" || strings.HasPrefix(name, ".") || strings.ContainsAny(name, `/\`+"\x00") || len(name) > maxDistroName {
		return fmt.Errorf("%q is not a WSL distro's name", name)
	}
	return nil
}

func (b *Binds) grace() time.Duration {
	if b.Grace > 0 {
		return b.Grace
	}
	return SweepGrace
}

// folder holds this distro's folder in the shared tmpfs, made when
// missing, every component resolved without following a symlink. It is
// opened afresh each time: WSL empties the tmpfs when it restarts.
func (b *Binds) folder() (*mounts.Dir, error) {
	shared, err := mounts.OpenDir(b.Shared)
	if err != nil {
		return nil, err
	}
	defer shared.Close()
	all, err := shared.Sub(BindsDir)
	if err != nil {
		return nil, err
	}
	defer all.Close()
	return all.Sub(b.Distro)
}

// Claim takes the distro's folder for this process until release: one
// proxy per distro, so that a bind one of them takes down as left by an
// earlier run is never one another has just handed out for a create. The
// lock (flock on the folder) goes with the process however it ends, kill
// -9 included; it is taken before the bind service's socket, whose
// stale-socket check alone lets two proxies starting at once both in.
func (b *Binds) Claim() (release func(), err error) {
	dir, err := b.folder()
	if err != nil {
		return nil, fmt.Errorf("the distro's binds folder: %w", err)
	}
	defer dir.Close()
	f, err := dir.Open()
	if err != nil {
		return nil, fmt.Errorf("the distro's binds folder: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("another ddinit proxy serves the distro %q (it holds %s): stop it first", b.Distro, dir.Path())
		}
		return nil, fmt.Errorf("lock %s: %w", dir.Path(), err)
	}
	return func() { f.Close() }, nil
}

// enginePath is where the engine sees the bind id.
func (b *Binds) enginePath(id string) string { return filepath.Join(EngineBinds, b.Distro, id) }

// id names a source's bind: stable, so a container made again after a
// restart finds the same path.
func id(source string) string {
	sum := sha256.Sum256([]byte(source))
	return hex.EncodeToString(sum[:8])
}

// isBindID reports whether name is shaped as id makes them: 16 lowercase
// hex digits.
func isBindID(name string) bool {
	if len(name) != 16 {
		return false
	}
	_, err := hex.DecodeString(name)
	return err == nil && strings.ToLower(name) == name
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

// BindPolicy decides whether the resolved source real may be bound into
// the shared tmpfs shared, and what must be left out of it: a source
// inside the shared tmpfs may not (binding it into itself would repeat it,
// and every bind made there, in every distro); one that contains it is
// bound without it (skip). Both paths are clean and absolute, symlinks
// resolved.
func BindPolicy(real, shared string) (skip []string, err error) {
	if mounts.Within(real, shared) {
		return nil, fmt.Errorf("%w: %s is inside %s, the tmpfs every WSL distro shares: binding it would copy every bind made there into every distro; bind a folder outside it", errdefs.ErrInvalidArgument, real, shared)
	}
	if mounts.Within(shared, real) {
		return []string{shared}, nil
	}
	return nil, nil
}

// resolve is source with every symlink of its existing part resolved,
// and the part that does not exist yet (missing) as it was.
func resolve(source string) (real string, missing bool, err error) {
	existing, rest := source, ""
	for {
		r, err := filepath.EvalSymlinks(existing)
		if err == nil {
			return filepath.Join(r, rest), rest != "", nil
		}
		if !errors.Is(err, os.ErrNotExist) || existing == "/" {
			return "", false, fmt.Errorf("bind source %s: %w", source, err)
		}
		rest = filepath.Join(filepath.Base(existing), rest)
		existing = filepath.Dir(existing)
	}
}

// Ensure makes the bind of source (or finds it made) and returns where
// the engine sees it. A missing source is created when create is set
// (docker run -v does so on Linux) and an error otherwise. The bind
// counts as used until its container's create event names the container,
// or until the grace has passed.
func (b *Binds) Ensure(source string, create bool) (string, error) {
	return b.ensure(source, create, true)
}

// remake makes the bind of source again for a container that exists (no
// create is pending for it: it is not held).
func (b *Binds) remake(source string) (string, error) {
	return b.ensure(source, true, false)
}

func (b *Binds) ensure(source string, create, hold bool) (string, error) {
	if !filepath.IsAbs(source) {
		return "", fmt.Errorf("%w: bind source %s: not an absolute path", errdefs.ErrInvalidArgument, source)
	}
	source = filepath.Clean(source)
	real, missing, err := resolve(source)
	if err != nil {
		return "", err
	}
	shared, err := filepath.EvalSymlinks(b.Shared)
	if err != nil {
		shared = filepath.Clean(b.Shared)
	}
	skip, err := BindPolicy(real, shared)
	if err != nil {
		return "", err
	}
	table, err := mounts.ReadMountinfo("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	// The shared tmpfs may be seen elsewhere too (bound again): a source
	// on it is inside it, wherever it is.
	if at, ok := mounts.MountOf(table, shared); ok && at.Point == shared {
		if on, ok := mounts.MountOf(table, real); ok && on.Dev == at.Dev {
			return "", fmt.Errorf("%w: %s is on %s, the tmpfs every WSL distro shares (seen at %s): binding it would copy every bind made there into every distro; bind a folder outside it", errdefs.ErrInvalidArgument, real, shared, on.Point)
		}
	}
	if missing && !create {
		return "", fmt.Errorf("%w: invalid mount config for type \"bind\": bind source path does not exist: %s", errdefs.ErrInvalidArgument, source)
	}
	if missing {
		if err := os.MkdirAll(real, 0o755); err != nil {
			return "", fmt.Errorf("create the bind source %s: %w", source, err)
		}
	}
	key := id(source)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.made == nil {
		b.made = map[string]*bind{}
	}
	if bd, ok := b.made[key]; ok {
		if hold {
			bd.holds, bd.handedOut = bd.holds+1, time.Now()
		}
		return b.enginePath(key), nil
	}
	dir, err := b.folder()
	if err != nil {
		return "", fmt.Errorf("the distro's binds folder: %w", err)
	}
	defer dir.Close()
	if !dir.MountedAt(key) {
		n, skipped, err := dir.BindTree(real, key, table, skip)
		if err != nil {
			return "", fmt.Errorf("bind %s for the engine: %w", source, err)
		}
		log := b.Log.WithFields(logrus.Fields{"source": source, "bind": key, "mounts": n})
		if real != source {
			log = log.WithField("resolved", real)
		}
		if len(skip) > 0 {
			log = log.WithField("leftOut", skip)
		}
		for _, e := range skipped {
			log.WithError(e).Debug("a mount below the source is not in the bind")
		}
		log.Info("bound for the engine")
	}
	bd := &bind{source: source, users: map[string]bool{}, handedOut: time.Now()}
	if hold {
		bd.holds = 1
	}
	b.made[key] = bd
	return b.enginePath(key), nil
}

// Use records that container uses the binds among engine paths (those of
// this distro; others are ignored): the create one was handed out for
// has named its container.
func (b *Binds) Use(container string, enginePaths []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range enginePaths {
		if bd, ok := b.made[b.ownID(p)]; ok && !bd.users[container] {
			bd.users[container] = true
			bd.holds = max(bd.holds-1, 0)
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

// Forget records that container is gone and takes down the binds nothing
// keeps any more: one handed out for a create whose container is not
// named yet stays (until the grace has passed).
func (b *Binds) Forget(container string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for key, bd := range b.made {
		if bd.users[container] {
			delete(bd.users, container)
			if bd.idle(b.grace()) {
				b.takeDown(key)
			}
		}
	}
}

// Sweep takes down the binds no container uses, handed out longer than
// the grace ago: made for a create that failed, or for one from Windows
// that never came.
func (b *Binds) Sweep() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for key, bd := range b.made {
		if len(bd.users) == 0 && time.Since(bd.handedOut) >= b.grace() {
			b.takeDown(key)
		}
	}
}

// takeDown unmounts and removes the bind point key, under b.mu: only
// this distro's own bind points, resolved without following a symlink.
func (b *Binds) takeDown(key string) {
	bd := b.made[key]
	dir, err := b.folder()
	if err == nil {
		err = dir.Unbind(key)
		dir.Close()
	}
	if err != nil {
		b.Log.WithError(err).WithField("bind", key).Warn("bind not taken down")
		return
	}
	delete(b.made, key)
	b.Log.WithFields(logrus.Fields{"source": bd.source, "bind": key}).Info("bind taken down: no container uses it")
}

// Resync sets each bind's users to the containers the engine lists
// (users: bind id → containers; sources: bind id → the distro path their
// labels name), for when events were missed while the engine or the
// proxy was away: a container removed meanwhile no longer keeps its
// binds, which are taken down if nothing else keeps them — those this
// process made, and those its earlier runs left in the distro's folder
// (leftovers).
func (b *Binds) Resync(users map[string][]string, sources map[string]string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.leftovers(users, sources)
	for key, bd := range b.made {
		bd.users = map[string]bool{}
		for _, c := range users[key] {
			bd.users[c] = true
		}
		if bd.idle(b.grace()) {
			b.takeDown(key)
		}
	}
}

// leftovers reads the distro's folder from the disk (its entries and the
// mount table), not from made: a bind there that this process did not
// make was left by an earlier run (ended before its containers were, or
// killed). One a listed container uses is kept and tracked from now on;
// the others are taken down. Entries that are not binds the proxy makes
// (not a mount, not named like a bind id, a symlink) are left alone and
// logged once. Under b.mu: no Ensure of this process is midway, so every
// bind it made is in made.
func (b *Binds) leftovers(users map[string][]string, sources map[string]string) {
	dir, err := b.folder()
	if err != nil {
		b.Log.WithError(err).Warn("binds left by an earlier run not looked for")
		return
	}
	defer dir.Close()
	names, err := b.onDisk(dir)
	if err != nil {
		b.Log.WithError(err).Warn("binds left by an earlier run not looked for")
		return
	}
	for _, name := range names {
		if _, ok := b.made[name]; ok {
			continue
		}
		log := b.Log.WithField("bind", name)
		// MountedAt opens name beneath the folder without following a
		// symlink: a symlink there is no mount of ours.
		if !isBindID(name) || !dir.MountedAt(name) {
			if !b.strays[name] {
				if b.strays == nil {
					b.strays = map[string]bool{}
				}
				b.strays[name] = true
				log.WithField("folder", dir.Path()).Info("left alone in the distro's binds folder: not a bind the proxy made")
			}
			continue
		}
		if cs := users[name]; len(cs) > 0 {
			bd := &bind{source: sources[name], users: map[string]bool{}, handedOut: time.Now()}
			for _, c := range cs {
				bd.users[c] = true
			}
			if b.made == nil {
				b.made = map[string]*bind{}
			}
			b.made[name] = bd
			log.WithFields(logrus.Fields{"source": bd.source, "containers": len(cs)}).Info("bind left by an earlier run kept: containers use it")
			continue
		}
		if err := dir.Unbind(name); err != nil {
			log.WithError(err).Warn("bind left by an earlier run not taken down")
			continue
		}
		log.Info("bind left by an earlier run taken down: no container uses it")
	}
}

// onDisk lists what is in the distro's folder dir: its entries, and the
// first component below it of each mount point the mount table has
// there.
func (b *Binds) onDisk(dir *mounts.Dir) ([]string, error) {
	f, err := dir.Open()
	if err != nil {
		return nil, err
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir.Path(), err)
	}
	table, err := mounts.ReadMountinfo("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	shared, err := filepath.EvalSymlinks(b.Shared)
	if err != nil {
		shared = filepath.Clean(b.Shared)
	}
	folder := filepath.Join(shared, BindsDir, b.Distro)
	for _, m := range table {
		if rel, ok := strings.CutPrefix(m.Point, folder+"/"); ok {
			name, _, _ := strings.Cut(rel, "/")
			if !slices.Contains(names, name) {
				names = append(names, name)
			}
		}
	}
	slices.Sort(names)
	return names, nil
}

// tracked reports whether the bind key is one this process keeps.
func (b *Binds) tracked(key string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, ok := b.made[key]
	return ok
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
