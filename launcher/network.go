package launcher

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"syscall"

	"github.com/ddinit/ddinit/engineclient"

	"github.com/ddinit/ddinit/network"
	"github.com/ddinit/ddinit/transport"
)

// wireNetwork connects PID 1's network namespace to the distro's and
// starts publishing container ports. A failure leaves the engine running
// without outside network, and says so.
func (l *launcher) wireNetwork(pid int, sockets map[string]string) error {
	root := fmt.Sprintf("/proc/%d/root", pid)
	log := l.log.WithField("component", "network")
	// Held open so that the NAT rules can still be removed with the pack's
	// iptables after PID 1, and its namespace, are gone.
	rootDir, err := os.Open(root)
	if err != nil {
		return fmt.Errorf("containers will have no network beyond the namespace: %w", err)
	}
	l.mu.Lock()
	l.net.rootDir = rootDir
	l.mu.Unlock()
	// The child resolves this before it execs, while it still holds a copy
	// of the descriptor.
	chroot := fmt.Sprintf("/proc/self/fd/%d", rootDir.Fd())
	subnet6 := l.cfg.Subnet6
	if subnet6 == "off" {
		subnet6 = ""
	}
	packTools := func(name string, args ...string) *exec.Cmd {
		c := exec.Command("/usr/sbin/"+name, args...)
		c.SysProcAttr = &syscall.SysProcAttr{Chroot: chroot}
		c.Dir = "/"
		c.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
		return c
	}
	link, err := network.Wire(pid, network.Config{
		Subnet:  l.cfg.Subnet,
		Subnet6: subnet6,
		Tools:   packTools,
		Log:     log,
	})
	if err != nil {
		return fmt.Errorf("containers will have no network beyond the namespace: %w", err)
	}
	l.mu.Lock()
	l.net.link = link
	l.net.names = &localNames{link: link}
	l.mu.Unlock()
	if sockets["docker"] == "" {
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	dockerSocket := root + sockets["docker"]
	pub := &network.Publisher{DockerSocket: dockerSocket, Target: link.InnerAddr.Addr(), Namespace: fmt.Sprintf("/proc/%d/ns/net", pid), Log: log}
	// Held, not woken, while the engine is stopped idle: ddinit's own.
	pub.Dial = func(ctx context.Context) (net.Conn, error) {
		return l.hold.dial(engineclient.WithInternal(ctx), func(ctx context.Context) (net.Conn, error) { return transport.DialUnix(ctx, dockerSocket) })
	}
	done := make(chan struct{})
	go func() { pub.Run(ctx); close(done) }()
	l.mu.Lock()
	l.net.stopPublisher = func() { cancel(); <-done }
	l.net.publisher = pub
	l.mu.Unlock()
	l.startReach(pid, link, dockerSocket)
	return nil
}

// unwireNetwork closes the published ports and removes the link and the
// NAT rules.
func (l *launcher) unwireNetwork() {
	l.mu.Lock()
	n := l.net
	// A boot after a rollback, in this same run, wires its own (or none).
	l.net = netState{}
	l.mu.Unlock()
	stop, link, rootDir := n.stopPublisher, n.link, n.rootDir
	// The routes go while their link is there, the forwards with the
	// published ports.
	l.stopReach()
	if stop != nil {
		stop()
	}
	if link != nil {
		if err := link.Close(); err != nil {
			l.log.WithError(err).Warn("network cleanup incomplete")
		}
	}
	if rootDir != nil {
		rootDir.Close()
	}
}
