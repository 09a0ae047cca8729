// Command kube is every Kubernetes program the cluster runs, in one
// binary (as k3s and the old hyperkube): kubelet, kube-apiserver,
// kube-controller-manager, kube-scheduler, kube-proxy, etcd and CoreDNS
// (the plugins a cluster's DNS needs). The packages they share (client-go,
// the API types, grpc) are compiled and linked once: about 150 MB instead
// of about 450 MB for seven binaries, and each build links once.
//
// scripts/build-kube.sh builds it inside a copy of k8s.io/kubernetes, so
// that the versions Kubernetes pins are the ones built. The program is
// named by its first argument or by the name it is run as:
//
//	kube kubelet --config=…
//	kube etcd --data-dir=…
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	_ "time/tzdata" // CronJob time zones

	"github.com/coredns/coredns/coremain"
	"go.etcd.io/etcd/server/v3/etcdmain"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"

	// CoreDNS with the plugins a cluster's Corefile uses.
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

// cobraPrograms are Kubernetes' own, run as their commands are.
var cobraPrograms = map[string]func() *cobra.Command{
	"kubelet":                 func() *cobra.Command { return kubelet.NewKubeletCommand(context.Background()) },
	"kube-apiserver":          apiserver.NewAPIServerCommand,
	"kube-controller-manager": controllermanager.NewControllerManagerCommand,
	"kube-scheduler":          func() *cobra.Command { return scheduler.NewSchedulerCommand() },
	"kube-proxy":              proxy.NewProxyCommand,
}

// otherPrograms read os.Args themselves.
var otherPrograms = map[string]func(){
	"etcd":    func() { etcdmain.Main(os.Args) },
	"coredns": coremain.Run,
}

func main() {
	name := filepath.Base(os.Args[0])
	if !known(name) && len(os.Args) > 1 {
		name = os.Args[1]
		os.Args = append([]string{name}, os.Args[2:]...)
	}
	if newCommand, ok := cobraPrograms[name]; ok {
		os.Exit(cli.Run(newCommand()))
	}
	if run, ok := otherPrograms[name]; ok {
		run()
		return
	}
	fmt.Fprintf(os.Stderr, "usage: kube PROGRAM [ARGS...]: PROGRAM is one of %s\n", strings.Join(names(), ", "))
	os.Exit(2)
}

func known(name string) bool {
	_, cobraOK := cobraPrograms[name]
	_, otherOK := otherPrograms[name]
	return cobraOK || otherOK
}

func names() []string {
	var all []string
	for n := range cobraPrograms {
		all = append(all, n)
	}
	for n := range otherPrograms {
		all = append(all, n)
	}
	sort.Strings(all)
	return all
}
