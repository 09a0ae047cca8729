// Sources scripts/build-kube.sh builds inside upstream modules' copies
// (kube.go inside k8s.io/kubernetes; pause/ on its own). This go.mod only
// keeps them out of ddinit's module: they import what ddinit does not.
module ddinit.invalid/packs/kube

go 1.26
