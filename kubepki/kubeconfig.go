package kubepki

import (
	"encoding/json"
	"fmt"

	"github.com/ddinit/ddinit/regularfile"
)

// Context is the name of the cluster, user and context in every
// kubeconfig made here, as Docker Desktop names its own.
const Context = "docker-desktop"

// Kubeconfig is a kubeconfig for the API server at server (an https URL)
// as the leaf named user (Leaves' names), with the CA and the
// credentials inline, so that it works wherever it is copied: a distro,
// the frontend. JSON, which every kubeconfig reader takes (YAML is a
// superset).
func (p *PKI) Kubeconfig(server, user string) ([]byte, error) {
	f := p.Of(user)
	cert, err := regularfile.Read(f.Cert, maxFile)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig for %s: %w", user, err)
	}
	key, err := regularfile.Read(f.Key, maxFile)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig for %s: %w", user, err)
	}
	doc := map[string]any{
		"apiVersion": "v1",
		"kind":       "Config",
		"clusters": []map[string]any{{"name": Context, "cluster": map[string]any{
			"server": server, "certificate-authority-data": p.CA,
		}}},
		"users": []map[string]any{{"name": Context, "user": map[string]any{
			"client-certificate-data": cert, "client-key-data": key,
		}}},
		"contexts": []map[string]any{{"name": Context, "context": map[string]any{
			"cluster": Context, "user": Context,
		}}},
		"current-context": Context,
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("kubeconfig for %s: %w", user, err)
	}
	return append(b, '\n'), nil
}
