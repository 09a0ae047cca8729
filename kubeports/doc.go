// Package kubeports makes the Kubernetes cluster that runs in PID 1's
// namespace usable from the distros while it is on, as Docker Desktop's
// is from Windows:
//
//   - the API server published on the distro's 127.0.0.1:6443 (and
//     [::1]:6443 where the distro has an IPv6 loopback), each connection
//     carried across the link to the API server (transport.ForwardPort,
//     the docker -p publisher's forwarder);
//   - every port of every Service of type LoadBalancer published on the
//     distro's loopback at the Service's port, carried to its NodePort on
//     the node (the API server's host, where kube-proxy serves NodePorts),
//     and the Service's status.loadBalancer.ingress set to
//     [{"hostname": "localhost"}], so `kubectl get svc` shows where it is.
//     The Services are followed through the API server (a list, then a
//     watch from its resourceVersion; listed again when the watch breaks,
//     with backoff);
//   - the admin kubeconfig offered to the distros at
//     <shared>/docker-desktop/kubernetes/config (mode 0640, root and the
//     distro's docker group), rewritten when its content changes.
//
// The launcher gives it the cluster's state as PID 1 reports it (Set) and
// ends it (Close) when PID 1 goes (a live switch: the next one reports
// its own) or ddinit run ends; Set with On false withdraws everything.
//
// It must not serve a port another process holds (a port found taken is
// logged once, with what to do, and tried again, never taken over), write
// in the shared tmpfs but beneath it without following a symlink (package
// mounts), change anything in the cluster but a LoadBalancer Service's
// status.loadBalancer, nor depend on client-go: the API is spoken with
// net/http and encoding/json, with the admin kubeconfig's credentials.
package kubeports
