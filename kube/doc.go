// Package kube owns what ddinit's single-node Kubernetes cluster is made
// of inside PID 1's namespace: its files in the data store (the PKI
// through package kubepki, the kubeconfigs, kubelet's configuration,
// CoreDNS's Corefile, the CNI network), the service definitions of its
// seven daemons (etcd, the API server, the controller manager, the
// scheduler, kubelet, kube-proxy, CoreDNS), all run by package services'
// supervisor like dockerd, containerd's CRI configuration, the pause
// image and the images docker builds imported where the CRI finds them,
// the cluster objects ddinit itself keeps (the kube-dns Service), and
// the clean-up of what a cluster switched off leaves in the namespace's
// network.
//
// It must not start or stop processes itself (the supervisor does), and
// it must not touch docker's containers, images or networks: it reads
// docker's images through dockerd's API, and removes only the pod
// network's bridge, chains and namespaces.
package kube
