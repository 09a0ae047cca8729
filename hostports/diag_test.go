package hostports

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"slices"
	"syscall"
	"testing"

	"github.com/ddinit/ddinit/network"
	"golang.org/x/sys/unix"
)

// nlmsg frames body as a netlink message, padded to 4 bytes.
func nlmsg(typ, flags uint16, seq uint32, body []byte) []byte {
	b := make([]byte, sizeofNlMsghdr, align4(sizeofNlMsghdr+len(body)))
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(sizeofNlMsghdr+len(body)))
	ne.PutUint16(b[4:], typ)
	ne.PutUint16(b[6:], flags)
	ne.PutUint32(b[8:], seq)
	b = append(b, body...)
	return b[:cap(b)]
}

// diagBody lays m out as the kernel does (struct inet_diag_msg), with the
// INET_DIAG_SKV6ONLY attribute for AF_INET6, and attrs after it.
func diagBody(m diagMsg, attrs ...[]byte) []byte {
	b := make([]byte, sizeofDiagMsg)
	b[0], b[1] = m.Family, m.State
	id := b[4:]
	binary.BigEndian.PutUint16(id[0:], m.Src.Port())
	binary.BigEndian.PutUint16(id[2:], m.Dst.Port())
	if m.Family == unix.AF_INET {
		copy(id[4:], m.Src.Addr().AsSlice())
		copy(id[20:], m.Dst.Addr().AsSlice())
	} else {
		copy(id[4:], m.Src.Addr().AsSlice())
		copy(id[20:], m.Dst.Addr().AsSlice())
		v := byte(0)
		if m.V6Only {
			v = 1
		}
		attrs = append([][]byte{rtattr(inetDiagSKV6Only, []byte{v})}, attrs...)
	}
	binary.NativeEndian.PutUint32(b[68:], m.Inode)
	for _, a := range attrs {
		b = append(b, a...)
	}
	return b
}

func rtattr(typ uint16, data []byte) []byte {
	b := make([]byte, 4, align4(4+len(data)))
	binary.NativeEndian.PutUint16(b[0:], uint16(4+len(data)))
	binary.NativeEndian.PutUint16(b[2:], typ)
	b = append(b, data...)
	return b[:cap(b)]
}

func done(seq uint32) []byte { return nlmsg(unix.NLMSG_DONE, unix.NLM_F_MULTI, seq, make([]byte, 4)) }

func errno(typ uint16, seq uint32, e syscall.Errno) []byte {
	b := make([]byte, 4)
	binary.NativeEndian.PutUint32(b, uint32(-int32(e)))
	return nlmsg(typ, 0, seq, b)
}

var (
	listen4 = diagMsg{Family: unix.AF_INET, State: tcpListen, Src: netip.MustParseAddrPort("127.0.0.1:8080"), Dst: netip.MustParseAddrPort("0.0.0.0:0"), Inode: 4242}
	listen6 = diagMsg{Family: unix.AF_INET6, State: tcpListen, Src: netip.MustParseAddrPort("[::]:80"), Dst: netip.MustParseAddrPort("[::]:0"), Inode: 7, V6Only: true}
	udp6    = diagMsg{Family: unix.AF_INET6, State: tcpClose, Src: netip.MustParseAddrPort("[::ffff:10.0.0.1]:53"), Dst: netip.MustParseAddrPort("[::]:0"), Inode: 99}
)

func msg(m diagMsg, attrs ...[]byte) []byte {
	return nlmsg(unix.SOCK_DIAG_BY_FAMILY, unix.NLM_F_MULTI, 1, diagBody(m, attrs...))
}

func cat(parts ...[]byte) []byte { return slices.Concat(parts...) }

// The parser reads what the kernel sends, skips what is not its dump's,
// and says what ends it: the end, an error, an interrupted dump, garbage.
func TestParseDump(t *testing.T) {
	short := msg(listen4)
	binary.NativeEndian.PutUint32(short, 60) // a header claiming a body too short for inet_diag_msg
	otherFamily := diagBody(listen4)
	otherFamily[0] = unix.AF_UNIX
	badAttr := diagBody(listen6)
	binary.NativeEndian.PutUint16(badAttr[sizeofDiagMsg:], 200) // longer than what is left
	intr := msg(listen4)
	binary.NativeEndian.PutUint16(intr[6:], unix.NLM_F_MULTI|unix.NLM_F_DUMP_INTR)
	for _, c := range []struct {
		name string
		in   []byte
		want []diagMsg
		done bool
		err  error // errors.Is; errAny: any error
	}{
		{"one datagram, more to come", cat(msg(listen4), msg(udp6)), []diagMsg{listen4, udp6}, false, nil},
		{"the end", cat(msg(listen6), done(1)), []diagMsg{listen6}, true, nil},
		{"v6only off", msg(diagMsg{Family: unix.AF_INET6, State: tcpListen, Src: netip.MustParseAddrPort("[::]:80"), Dst: netip.MustParseAddrPort("[::]:0"), Inode: 8}),
			[]diagMsg{{Family: unix.AF_INET6, State: tcpListen, Src: netip.MustParseAddrPort("[::]:80"), Dst: netip.MustParseAddrPort("[::]:0"), Inode: 8}}, false, nil},
		{"attributes beside", msg(listen6, rtattr(4, []byte("cubic\x00")), rtattr(8, []byte{1})), []diagMsg{listen6}, false, nil},
		{"another dump's left over", cat(nlmsg(unix.SOCK_DIAG_BY_FAMILY, unix.NLM_F_MULTI, 0, diagBody(listen6)), done(0), msg(listen4)), []diagMsg{listen4}, false, nil},
		{"empty", nil, nil, false, nil},
		{"an error", errno(unix.NLMSG_ERROR, 1, syscall.EPERM), nil, true, syscall.EPERM},
		{"an acknowledgement", cat(errno(unix.NLMSG_ERROR, 1, 0), msg(listen4)), []diagMsg{listen4}, false, nil},
		{"the end with an error", cat(msg(listen4), errno(unix.NLMSG_DONE, 1, syscall.ENOBUFS)), []diagMsg{listen4}, true, syscall.ENOBUFS},
		{"interrupted: read whole, and said", cat(intr, done(1)), []diagMsg{listen4}, true, errInterrupted},
		{"a header past the end", msg(listen4)[:40], nil, false, errAny},
		{"a header too short", cat(nlmsg(unix.SOCK_DIAG_BY_FAMILY, 0, 1, nil)[:12], make([]byte, 8)), nil, false, errAny},
		{"a message too short", short[:60], nil, false, errAny},
		{"an unknown family", nlmsg(unix.SOCK_DIAG_BY_FAMILY, 0, 1, otherFamily), nil, false, errAny},
		{"a bad attribute", nlmsg(unix.SOCK_DIAG_BY_FAMILY, 0, 1, badAttr), []diagMsg{{Family: unix.AF_INET6, State: tcpListen, Src: listen6.Src, Dst: listen6.Dst, Inode: 7}}, false, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, gotDone, err := parseDump(c.in, 1, nil)
			switch {
			case c.err == errAny && err == nil, c.err == nil && err != nil, c.err != nil && c.err != errAny && !errors.Is(err, c.err):
				t.Fatalf("error %v, want %v", err, c.err)
			}
			if !slices.Equal(got, c.want) || gotDone != c.done {
				t.Fatalf("got %+v done %v, want %+v done %v", got, gotDone, c.want, c.done)
			}
		})
	}
}

var errAny = errors.New("any error")

// Whatever a datagram holds, the parser returns without a panic, and
// what it reads is a socket of a known family that reads back the same.
func FuzzParseDump(f *testing.F) {
	f.Add(cat(msg(listen4), msg(listen6), done(1)))
	f.Add(cat(msg(udp6, rtattr(4, []byte("x"))), errno(unix.NLMSG_ERROR, 1, syscall.EPERM)))
	f.Add(msg(listen6)[:50])
	f.Fuzz(func(t *testing.T, b []byte) {
		msgs, _, _ := parseDump(b, 1, nil)
		var again []byte
		for _, m := range msgs {
			if m.Family == unix.AF_INET && (!m.Src.Addr().Is4() || !m.Dst.Addr().Is4()) ||
				m.Family == unix.AF_INET6 && (!m.Src.Addr().Is6() || !m.Dst.Addr().Is6()) ||
				m.Family != unix.AF_INET && m.Family != unix.AF_INET6 {
				t.Fatalf("read %+v", m)
			}
			again = append(again, msg(m)...)
		}
		back, _, err := parseDump(again, 1, nil)
		if err != nil || !slices.Equal(back, msgs) {
			t.Fatalf("read %+v, and back %+v (%v)", msgs, back, err)
		}
	})
}

// inode is the inode of a socket (what sock_diag says it is). It may be
// called from any goroutine.
func inode(t testing.TB, c syscall.Conn) uint32 {
	t.Helper()
	var st unix.Stat_t
	raw, err := c.SyscallConn()
	if err == nil {
		raw.Control(func(fd uintptr) { err = unix.Fstat(int(fd), &st) })
	}
	if err != nil {
		t.Error(err)
	}
	return uint32(st.Ino)
}

// The kernel's dump, from a netlink socket made in a namespace, lists the
// sockets that listen there, and only those: not a connection, not a
// connected UDP socket, not a socket of the outside.
func TestDumpFindsListeners(t *testing.T) {
	ns, _ := newNetns(t)
	outside, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer outside.Close()
	v6 := ipv6In(t, ns)
	var closers []interface{ Close() error }
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	want := map[uint32]sock{}
	if err := network.InNamespace(ns, func() {
		tcp, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Error(err)
			return
		}
		closers = append(closers, tcp)
		want[inode(t, tcp.(*net.TCPListener))] = sock{Proto: "tcp", Addr: tcp.Addr().(*net.TCPAddr).AddrPort()}
		// A connection to it, both ends: established, not listed.
		c, err := net.Dial("tcp", tcp.Addr().String())
		if err != nil {
			t.Error(err)
			return
		}
		a, _ := tcp.Accept()
		closers = append(closers, c, a)
		udp, err := net.ListenPacket("udp4", "0.0.0.0:0")
		if err != nil {
			t.Error(err)
			return
		}
		closers = append(closers, udp)
		want[inode(t, udp.(*net.UDPConn))] = sock{Proto: "udp", Addr: udp.LocalAddr().(*net.UDPAddr).AddrPort()}
		// A connected UDP socket (as our forwarder's): not listed.
		cu, err := net.Dial("udp", udp.LocalAddr().String())
		if err != nil {
			t.Error(err)
			return
		}
		closers = append(closers, cu)
		if !v6 {
			return
		}
		// Go listens on [::] dual-stack; "tcp6" makes it v6only.
		dual, err := net.Listen("tcp", "[::]:0")
		if err != nil {
			t.Error(err)
			return
		}
		only, err := net.Listen("tcp6", "[::]:0")
		if err != nil {
			t.Error(err)
			return
		}
		u6, err := net.ListenPacket("udp6", "[::1]:0")
		if err != nil {
			t.Error(err)
			return
		}
		closers = append(closers, dual, only, u6)
		want[inode(t, dual.(*net.TCPListener))] = sock{Proto: "tcp", Addr: dual.Addr().(*net.TCPAddr).AddrPort()}
		want[inode(t, only.(*net.TCPListener))] = sock{Proto: "tcp", Addr: only.Addr().(*net.TCPAddr).AddrPort(), V6Only: true}
		want[inode(t, u6.(*net.UDPConn))] = sock{Proto: "udp", Addr: u6.LocalAddr().(*net.UDPAddr).AddrPort(), V6Only: true}
	}); err != nil {
		t.Fatal(err)
	}
	if t.Failed() {
		return
	}
	d, err := openDiag(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for range 2 { // the socket is used again
		got, err := d.listeners(nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Errorf("listed %+v, want %+v", got, want)
		}
		for _, s := range got {
			w, ok := want[s.Inode]
			w.Inode = s.Inode
			if !ok || s != w {
				t.Errorf("listed %+v, want %+v", s, w)
			}
		}
	}
}
