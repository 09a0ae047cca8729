package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/ddinit/ddinit/kubeapi"
)

// manager is the field manager of the objects ddinit keeps.
const manager = "ddinit"

// object is one cluster object ddinit keeps, at its API path.
type object struct {
	path string
	body map[string]any
}

// objects are what the cluster needs of ddinit beside its components:
// the kube-dns Service, which pods are pointed at, with no selector and an
// EndpointSlice naming CoreDNS on the node; and CoreDNS's read access.
func (c *Cluster) objects() []object {
	meta := func(name, ns string, labels map[string]string) map[string]any {
		m := map[string]any{"name": name, "labels": labels}
		if ns != "" {
			m["namespace"] = ns
		}
		return m
	}
	dnsLabels := map[string]string{"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}
	return []object{
		{"/api/v1/namespaces/kube-system/services/kube-dns", map[string]any{
			"apiVersion": "v1", "kind": "Service", "metadata": meta("kube-dns", "kube-system", dnsLabels),
			"spec": map[string]any{"clusterIP": DNSServiceIP, "ports": []map[string]any{
				{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": coreDNSPort},
				{"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": coreDNSPort},
			}},
		}},
		{"/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices/kube-dns-ddinit", map[string]any{
			"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
			"metadata": meta("kube-dns-ddinit", "kube-system", map[string]string{
				"kubernetes.io/service-name": "kube-dns", "endpointslice.kubernetes.io/managed-by": "ddinit",
			}),
			"addressType": "IPv4",
			"endpoints":   []map[string]any{{"addresses": []string{c.NodeIP.String()}, "conditions": map[string]any{"ready": true}, "nodeName": NodeName}},
			"ports": []map[string]any{
				{"name": "dns", "port": coreDNSPort, "protocol": "UDP"},
				{"name": "dns-tcp", "port": coreDNSPort, "protocol": "TCP"},
			},
		}},
		{"/apis/rbac.authorization.k8s.io/v1/clusterroles/ddinit:coredns", map[string]any{
			"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": meta("ddinit:coredns", "", nil),
			"rules": []map[string]any{
				{"apiGroups": []string{""}, "resources": []string{"endpoints", "services", "pods", "namespaces"}, "verbs": []string{"list", "watch"}},
				{"apiGroups": []string{"discovery.k8s.io"}, "resources": []string{"endpointslices"}, "verbs": []string{"list", "watch"}},
			},
		}},
		{"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/ddinit:coredns", map[string]any{
			"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": meta("ddinit:coredns", "", nil),
			"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "ddinit:coredns"},
			"subjects": []map[string]any{{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "ddinit:coredns"}},
		}},
	}
}

// Client is the API server's client as ddinit speaks to it from PID 1's
// namespace, as admin.
func (c *Cluster) Client() *kubeapi.Client {
	return kubeapi.New(c.AdminKubeconfig(), fmt.Sprintf("127.0.0.1:%d", APIPort))
}

// KeepObjects makes the cluster's own objects what objects says (each
// start: the node's address may have changed).
func (c *Cluster) KeepObjects(ctx context.Context, api *kubeapi.Client) error {
	for _, o := range c.objects() {
		b, err := json.Marshal(o.body)
		if err != nil {
			return err
		}
		if err := api.Apply(ctx, manager, o.path, b); err != nil {
			return fmt.Errorf("kubernetes: keep %s: %w", o.path, err)
		}
	}
	return nil
}

// NodeReady says whether the node is Ready, or why not.
func NodeReady(ctx context.Context, api *kubeapi.Client) (bool, string) {
	resp, err := api.Do(ctx, false, http.MethodGet, "/api/v1/nodes/"+NodeName, nil, nil)
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	var node struct {
		Status struct {
			Conditions []struct{ Type, Status, Reason, Message string } `json:"conditions"`
		} `json:"status"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&node); err != nil {
		return false, "the node: " + err.Error()
	}
	for _, cond := range node.Status.Conditions {
		if cond.Type == "Ready" {
			if cond.Status == "True" {
				return true, ""
			}
			return false, "the node is not Ready: " + cond.Reason + ": " + cond.Message
		}
	}
	return false, "the node has not said it is Ready yet"
}
