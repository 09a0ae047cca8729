// Package kubepki owns the Kubernetes cluster's certificates and keys in
// the data store: a cluster CA, the API server's serving certificate (its
// names: kubernetes, kubernetes.default…, kubernetes.docker.internal,
// localhost, 127.0.0.1, the first service address, the node's), kubelet's
// serving certificate, one client credential per component and for the
// admin, and the service-account signing key; and the kubeconfigs made
// from them.
//
// Ensure is run at each start of the cluster: what is valid is kept byte
// for byte (a new CA would invalidate every kubeconfig handed out, a new
// service-account key every token); what is missing, unreadable, damaged,
// signed by another CA, near its end, or names other than it should is
// made again, and the Report says which and why. A damaged CA makes a new
// CA and so every certificate again.
//
// It must not start, stop or configure anything, nor read files other
// than its own folder's (through regularfile: a FIFO or a hung file
// system there is an error, not a hang).
package kubepki
