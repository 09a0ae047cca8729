package hostports

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"time"

	"github.com/ddinit/ddinit/network"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The sock_diag dump is written by hand, not with vishvananda/netlink:
// its SocketDiagTCP (v1.3.0) asks for every TCP state with the TCP_INFO
// extension and cannot ask for fewer, so the kernel would walk (and we
// would decode) every established connection of the engine's namespace
// at every poll: dockerd's, containerd's, each host-network container's.
// Asked for LISTEN alone (idiag_states), the kernel answers from its
// listening hash and skips the connections; a poll then costs the same
// however busy the containers are (measured with 200 listeners and 200
// connections: 60 µs of CPU a dump, against 1.3 ms for every state). The UDP dump has no such shortcut,
// but its table holds only bound sockets. x/sys/unix has the constants,
// not the structures: they are laid out here as <linux/inet_diag.h> does.

// Kernel values: TCP states (<net/tcp_states.h>) and the one attribute
// read.
const (
	tcpClose         = 7  // TCP_CLOSE: a UDP socket that is not connected
	tcpListen        = 10 // TCP_LISTEN
	inetDiagSKV6Only = 11 // INET_DIAG_SKV6ONLY: sent for AF_INET6 in LISTEN or CLOSE

	sizeofNlMsghdr  = 16
	sizeofSockID    = 48 // struct inet_diag_sockid
	sizeofReqV2     = 8 + sizeofSockID
	sizeofDiagMsg   = 4 + sizeofSockID + 20 // struct inet_diag_msg
	sizeofRtAttrHdr = 4
)

// diagMsg is what is read of one struct inet_diag_msg.
type diagMsg struct {
	Family   uint8 // AF_INET, AF_INET6
	State    uint8
	Src, Dst netip.AddrPort
	Inode    uint32
	V6Only   bool // IPV6_V6ONLY (INET_DIAG_SKV6ONLY)
}

// errInterrupted: the kernel says the dump may have missed sockets
// (NLM_F_DUMP_INTR, the tables changed while it ran). Its result is not
// used (a listener missing from it would close a forward and drop its
// connections), but it is read to its end, so that the socket can ask
// again.
var errInterrupted = errors.New("the socket dump was interrupted by a change (NLM_F_DUMP_INTR)")

// diagRequest is a SOCK_DIAG_BY_FAMILY dump request (struct nlmsghdr,
// then struct inet_diag_req_v2) for the sockets of family and protocol in
// states (a bit per TCP state), with no extension asked for.
func diagRequest(seq uint32, family, proto uint8, states uint32) []byte {
	b := make([]byte, sizeofNlMsghdr+sizeofReqV2)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(len(b)))
	ne.PutUint16(b[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(b[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(b[8:], seq)
	r := b[sizeofNlMsghdr:]
	r[0], r[1] = family, proto
	ne.PutUint32(r[4:], states)
	return b
}

// parseDump reads one datagram of the kernel's answer to the dump seq:
// it appends its socket messages to msgs, and says whether it ends the
// dump. Messages of another sequence (left from a dump given up) are
// skipped. It never reads past b. A datagram marked interrupted is read
// whole, and says so: errInterrupted.
func parseDump(b []byte, seq uint32, msgs []diagMsg) (_ []diagMsg, done bool, err error) {
	interrupted := false
	ne := binary.NativeEndian
	defer func() {
		if err == nil && interrupted {
			err = errInterrupted
		}
	}()
	for len(b) >= sizeofNlMsghdr {
		n := int(ne.Uint32(b[0:]))
		if n < sizeofNlMsghdr || n > len(b) {
			return msgs, false, fmt.Errorf("a netlink message of %d bytes in %d", n, len(b))
		}
		typ, flags, mseq := ne.Uint16(b[4:]), ne.Uint16(b[6:]), ne.Uint32(b[8:])
		body := b[sizeofNlMsghdr:n]
		b = b[min(align4(n), len(b)):]
		if mseq != seq {
			continue
		}
		interrupted = interrupted || flags&unix.NLM_F_DUMP_INTR != 0
		switch typ {
		case unix.NLMSG_DONE:
			// A dump the kernel could not finish says why here.
			if len(body) >= 4 {
				if e := int32(ne.Uint32(body)); e < 0 {
					return msgs, true, fmt.Errorf("socket dump: %w", syscall.Errno(-e))
				}
			}
			return msgs, true, nil
		case unix.NLMSG_ERROR:
			e := int32(-1) // a truncated error is an error still
			if len(body) >= 4 {
				e = int32(ne.Uint32(body))
			}
			if e == 0 {
				continue // an acknowledgement
			}
			return msgs, true, fmt.Errorf("socket dump: %w", syscall.Errno(-e))
		case unix.SOCK_DIAG_BY_FAMILY:
			m, err := parseDiagMsg(body)
			if err != nil {
				return msgs, false, err
			}
			msgs = append(msgs, m)
		}
	}
	return msgs, false, nil
}

// parseDiagMsg reads a struct inet_diag_msg and its attributes.
func parseDiagMsg(b []byte) (diagMsg, error) {
	if len(b) < sizeofDiagMsg {
		return diagMsg{}, fmt.Errorf("a socket message of %d bytes (want %d)", len(b), sizeofDiagMsg)
	}
	m := diagMsg{Family: b[0], State: b[1]}
	id := b[4 : 4+sizeofSockID]
	sport, dport := binary.BigEndian.Uint16(id[0:]), binary.BigEndian.Uint16(id[2:])
	switch m.Family {
	case unix.AF_INET:
		m.Src = netip.AddrPortFrom(netip.AddrFrom4([4]byte(id[4:8])), sport)
		m.Dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(id[20:24])), dport)
	case unix.AF_INET6:
		m.Src = netip.AddrPortFrom(netip.AddrFrom16([16]byte(id[4:20])), sport)
		m.Dst = netip.AddrPortFrom(netip.AddrFrom16([16]byte(id[20:36])), dport)
	default:
		return diagMsg{}, fmt.Errorf("a socket of address family %d", m.Family)
	}
	m.Inode = binary.NativeEndian.Uint32(b[68:])
	for a := b[align4(sizeofDiagMsg):]; len(a) >= sizeofRtAttrHdr; {
		n, typ := int(binary.NativeEndian.Uint16(a[0:])), binary.NativeEndian.Uint16(a[2:])
		if n < sizeofRtAttrHdr || n > len(a) {
			break // the fixed part is read; a bad attribute ends the rest
		}
		// IPv6 alone has the option; an IPv4 socket's would mean nothing.
		if typ == inetDiagSKV6Only && n > sizeofRtAttrHdr && m.Family == unix.AF_INET6 {
			m.V6Only = a[sizeofRtAttrHdr] != 0
		}
		a = a[min(align4(n), len(a)):]
	}
	return m, nil
}

func align4(n int) int { return (n + 3) &^ 3 }

// sock is a socket that listens in the engine's namespace.
type sock struct {
	Proto  string // tcp, udp
	Addr   netip.AddrPort
	V6Only bool
	Inode  uint32
}

// listening says whether a socket of proto listens: TCP in LISTEN, UDP
// bound to a port and connected to nothing (a connected UDP socket, such
// as our own forwarder's, answers one peer only).
func (m diagMsg) listening(proto string) bool {
	switch proto {
	case "tcp":
		return m.State == tcpListen
	case "udp":
		return m.State == tcpClose && m.Src.Port() != 0 && m.Dst.Port() == 0 && m.Dst.Addr().IsUnspecified()
	}
	return false
}

// diag is a NETLINK_SOCK_DIAG socket made in the engine's namespace: the
// kernel answers a dump with the sockets of the namespace the netlink
// socket was made in, whatever thread asks later.
type diag struct {
	fd   int
	seq  uint32
	buf  []byte
	msgs []diagMsg // the last dump's, kept for the next: a poll allocates little
}

func openDiag(ns netns.NsHandle) (*diag, error) {
	fd := -1
	var err error
	if nerr := network.InNamespace(ns, func() {
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	}); nerr != nil {
		return nil, nerr
	}
	if err != nil {
		return nil, fmt.Errorf("a sock_diag socket in the engine's network namespace: %w", err)
	}
	// A dump answers at once; the timeout only keeps a kernel that does
	// not from holding the watcher for ever.
	tv := unix.NsecToTimeval(int64(5 * time.Second))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("sock_diag socket timeout: %w", err)
	}
	// A dump's datagrams are at most 32 KiB (netlink_dump).
	return &diag{fd: fd, buf: make([]byte, 64<<10)}, nil
}

func (d *diag) Close() error { return unix.Close(d.fd) }

// dump asks for the sockets of family and proto in states and reads the
// answer to its end. What it returns is good until the next dump.
func (d *diag) dump(family, proto uint8, states uint32) ([]diagMsg, error) {
	d.seq++
	if err := unix.Sendto(d.fd, diagRequest(d.seq, family, proto, states), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("socket dump request: %w", err)
	}
	all := d.msgs[:0]
	defer func() { d.msgs = all[:0] }()
	interrupted := false
	for {
		n, _, err := unix.Recvfrom(d.fd, d.buf, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("socket dump: %w", err)
		}
		var done bool
		all, done, err = parseDump(d.buf[:n], d.seq, all)
		if errors.Is(err, errInterrupted) {
			interrupted, err = true, nil
		}
		if err != nil {
			return nil, err
		}
		if done && interrupted {
			return nil, errInterrupted
		}
		if done {
			return all, nil
		}
	}
}

// listeners dumps the sockets that listen in the namespace, TCP and UDP,
// IPv4 and IPv6, appended to out.
func (d *diag) listeners(out []sock) ([]sock, error) {
	for _, q := range []struct {
		proto   string
		ipProto uint8
		states  uint32
	}{{"tcp", unix.IPPROTO_TCP, 1 << tcpListen}, {"udp", unix.IPPROTO_UDP, 1 << tcpClose}} {
		for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
			msgs, err := d.dump(family, q.ipProto, q.states)
			if err != nil {
				return nil, err
			}
			for _, m := range msgs {
				if m.listening(q.proto) {
					out = append(out, sock{Proto: q.proto, Addr: m.Src, V6Only: m.V6Only, Inode: m.Inode})
				}
			}
		}
	}
	return out, nil
}
