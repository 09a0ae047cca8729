package transport

import (
	"net"
	"testing"
	"time"

	mdvsock "github.com/mdlayher/vsock"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
)

// fakeVsockConn stands in for an accepted AF_VSOCK connection from a given
// context ID; the real ones are exercised by TestRealVsockLoopback where
// vsock loopback exists (the qemu guest).
type fakeVsockConn struct {
	net.Conn
	cid    uint32
	closed bool
}

func (c *fakeVsockConn) RemoteAddr() net.Addr { return &mdvsock.Addr{ContextID: c.cid, Port: 1234} }
func (c *fakeVsockConn) Close() error         { c.closed = true; return nil }

type fakeListener struct {
	conns []*fakeVsockConn
}

func (l *fakeListener) Accept() (net.Conn, error) {
	if len(l.conns) == 0 {
		return nil, net.ErrClosed
	}
	c := l.conns[0]
	l.conns = l.conns[1:]
	return c, nil
}
func (l *fakeListener) Close() error   { return nil }
func (l *fakeListener) Addr() net.Addr { return &mdvsock.Addr{} }

func TestPeerFilterAdmitsOnlyTheHost(t *testing.T) {
	a := Addr{Scheme: "vsock", Port: 61000}
	for _, allowLocal := range []bool{false, true} {
		peers := []*fakeVsockConn{{cid: 3}, {cid: CIDLocal}, {cid: 7}, {cid: CIDHost}}
		log, hook := test.NewNullLogger()
		l := Filter(&fakeListener{conns: append([]*fakeVsockConn(nil), peers...)}, a, PeerPolicy{AllowLocal: allowLocal}, log)
		var admitted []uint32
		for {
			c, err := l.Accept()
			if err != nil {
				break
			}
			admitted = append(admitted, c.(*fakeVsockConn).cid)
		}
		want := []uint32{CIDHost}
		if allowLocal {
			want = []uint32{CIDLocal, CIDHost}
		}
		if len(admitted) != len(want) || admitted[len(admitted)-1] != CIDHost || (allowLocal && admitted[0] != CIDLocal) {
			t.Fatalf("allowLocal=%v admitted %v, want %v", allowLocal, admitted, want)
		}
		for _, p := range peers {
			refused := p.cid != CIDHost && !(allowLocal && p.cid == CIDLocal)
			if p.closed != refused {
				t.Fatalf("peer %d closed=%v", p.cid, p.closed)
			}
		}
		if len(hook.Entries) == 0 || hook.LastEntry().Level != logrus.WarnLevel {
			t.Fatal("refusals are not logged")
		}
	}
	// Other transports pass through untouched.
	u := &fakeListener{}
	if Filter(u, Addr{Scheme: "unix", Path: "/x"}, PeerPolicy{}, logrus.New()) != net.Listener(u) {
		t.Fatal("a unix listener was wrapped")
	}
	_ = time.Second
}
