package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
	"github.com/ddinit/ddinit/engineclient"
	"github.com/ddinit/ddinit/transport"
	"github.com/distribution/reference"
	"github.com/sirupsen/logrus"
)

// CRINamespace is the containerd namespace the CRI keeps pods and their
// images in.
const CRINamespace = "k8s.io"

// snapshotter is the CRI's (services.CRI's configuration).
const snapshotter = "overlayfs"

// ImportPause imports the image's pause image where the CRI finds it,
// unless it is there already.
func (c *Cluster) ImportPause(ctx context.Context, client *containerd.Client) error {
	ctx = namespaces.WithNamespace(ctx, CRINamespace)
	if img, err := client.GetImage(ctx, c.Manifest.PauseImage); err == nil {
		if ok, err := img.IsUnpacked(ctx, snapshotter); err == nil && ok {
			return nil
		}
	}
	f, err := os.Open(filepath.Join(c.Tree, "images/pause.tar"))
	if err != nil {
		return fmt.Errorf("the pause image: %w", err)
	}
	defer f.Close()
	if _, err := importImages(ctx, client, f); err != nil {
		return fmt.Errorf("the pause image: %w", err)
	}
	if _, err := client.GetImage(ctx, c.Manifest.PauseImage); err != nil {
		return fmt.Errorf("the pause image: the image's pause.tar has no %s: %w", c.Manifest.PauseImage, err)
	}
	return nil
}

// importImages imports an image archive (OCI layout or docker save's)
// and unpacks what it holds for the CRI's snapshotter.
func importImages(ctx context.Context, client *containerd.Client, r io.Reader) ([]string, error) {
	imgs, err := client.Import(ctx, r)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, i := range imgs {
		if err := containerd.NewImage(client, i).Unpack(ctx, snapshotter); err != nil {
			return names, fmt.Errorf("unpack %s: %w", i.Name, err)
		}
		names = append(names, i.Name)
	}
	return names, nil
}

// ImageSync gives pods the images docker has: while it runs, every image
// docker tags, builds, pulls, loads or imports is imported where the CRI
// finds it (so a Deployment runs what `docker build` made, with no
// registry), and at its start every tagged image the CRI lacks. dockerd
// keeps its images in its graph driver, which the CRI cannot read: each
// imported image takes its room a second time in containerd's store.
type ImageSync struct {
	DockerSocket string
	Containerd   *containerd.Client
	Log          logrus.FieldLogger

	mu      sync.Mutex
	done    map[string]string // name → docker image ID imported
	syncing bool              // a full sync runs
}

// Run follows docker's image events until ctx ends, and returns once
// every import it started is over.
func (s *ImageSync) Run(ctx context.Context) {
	s.done = map[string]string{}
	dial := func(ctx context.Context) (net.Conn, error) { return transport.DialUnix(ctx, s.DockerSocket) }
	engine := engineclient.New(dial)
	var syncs sync.WaitGroup
	defer syncs.Wait()
	engine.Follow(ctx, `{"type":["image"],"event":["tag","pull","load","import"]}`,
		func() error {
			// Each time the events open again (dockerd restarted): one
			// full sync at a time, the events meanwhile taken as they come.
			s.mu.Lock()
			start := !s.syncing
			s.syncing = true
			s.mu.Unlock()
			if start {
				syncs.Go(func() {
					s.syncAll(ctx, engine)
					s.mu.Lock()
					s.syncing = false
					s.mu.Unlock()
				})
			}
			return nil
		},
		func(ev engineclient.Event) {
			ref := ev.Actor.Attributes["name"]
			if ref == "" {
				ref = ev.Actor.ID
			}
			s.syncOne(ctx, engine, ref)
		}, s.Log)
}

// dockerImage is what docker says of one image.
type dockerImage struct {
	ID       string   `json:"Id"`
	RepoTags []string `json:"RepoTags"`
}

// syncAll imports every tagged image the CRI lacks.
func (s *ImageSync) syncAll(ctx context.Context, engine *engineclient.Client) {
	var list []dockerImage
	if err := engine.Get(ctx, "/images/json", &list); err != nil {
		s.Log.WithError(err).Warn("docker's images were not listed for the cluster")
		return
	}
	for _, img := range list {
		s.importFor(ctx, img)
	}
}

// syncOne imports the image ref names (a tag, or an ID: a load).
func (s *ImageSync) syncOne(ctx context.Context, engine *engineclient.Client, ref string) {
	var img dockerImage
	if err := engine.Get(ctx, "/images/"+url.PathEscape(ref)+"/json", &img); err != nil {
		s.Log.WithError(err).WithField("image", ref).Debug("an image docker named is gone")
		return
	}
	s.importFor(ctx, img)
}

// importFor imports img under its tags, unless the CRI has each already
// at the same image.
func (s *ImageSync) importFor(ctx context.Context, img dockerImage) {
	cctx := namespaces.WithNamespace(ctx, CRINamespace)
	var names []string
	for _, tag := range img.RepoTags {
		if tag == "<none>:<none>" {
			continue
		}
		s.mu.Lock()
		same := s.done[tag] == img.ID
		s.mu.Unlock()
		if same || s.has(cctx, tag, img.ID) {
			continue
		}
		names = append(names, tag)
	}
	if len(names) == 0 {
		return
	}
	start := time.Now()
	imported, err := s.save(cctx, names)
	log := s.Log.WithFields(logrus.Fields{"image": names, "id": engineclient.ShortID(img.ID)})
	if err != nil {
		if ctx.Err() != nil { // the cluster is going: not a failure
			log.WithError(err).Debug("an image was not given to the cluster before it stopped")
			return
		}
		log.WithError(err).Warn("an image docker has was not given to the cluster")
		return
	}
	s.mu.Lock()
	for _, n := range names {
		s.done[n] = img.ID
	}
	s.mu.Unlock()
	log.WithFields(logrus.Fields{"as": imported, "ms": time.Since(start).Milliseconds()}).Info("image given to the cluster")
}

// has says whether the CRI's namespace has tag (docker's short form) at
// the image whose config is id.
func (s *ImageSync) has(ctx context.Context, tag, id string) bool {
	i, err := s.Containerd.GetImage(ctx, normalize(tag))
	if err != nil {
		return false
	}
	cfg, err := i.Config(ctx)
	return err == nil && cfg.Digest.String() == id
}

// save streams docker's archive of names into containerd.
func (s *ImageSync) save(ctx context.Context, names []string) ([]string, error) {
	q := url.Values{"names": names}
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return transport.DialUnix(ctx, s.DockerSocket)
		},
	}}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/images/get?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set(engineclient.InternalHeader, "1")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("docker save: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		var m struct{ Message string }
		json.Unmarshal(b, &m)
		return nil, fmt.Errorf("docker save: %s: %s", resp.Status, m.Message)
	}
	return importImages(ctx, s.Containerd, resp.Body)
}

// normalize is docker's short name as containerd's import names it
// ("web:1" → "docker.io/library/web:1").
func normalize(tag string) string {
	ref, err := reference.ParseDockerRef(tag)
	if err != nil {
		return tag
	}
	return ref.String()
}
