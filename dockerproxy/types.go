package dockerproxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"time"

	"github.com/ddinit/ddinit/fairshare"
	"github.com/ddinit/ddinit/logs"
	"github.com/sirupsen/logrus"
)

// Proxy serves the docker API on a listener and passes it on to the
// engine, rewriting what it is given hooks for.
type Proxy struct {
	// Dial opens a connection to the engine's socket.
	Dial func(ctx context.Context) (net.Conn, error)
	// Translate maps the bind sources of create requests.
	Translate Translator
	// Label, when set, names the label a created container gets with the
	// sources that were rewritten (see LabelRewritten).
	Label string
	// Edits are further edits of create bodies, after the bind rewrite and
	// its label.
	Edits []CreateEdit
	// Layout, when set, says how the engine reads a create body without a
	// HostConfig; else the engine is asked (its API version) when an
	// edit needs to know.
	Layout func(ctx context.Context) (atTop bool, err error)
	// BuildArgs, when set, are build arguments every build gets unless it
	// gives them itself (the proxy's, for both builders).
	BuildArgs func() map[string]string
	// Ports, when set, reserves a container's published ports before its
	// start is passed on.
	Ports PortReserver
	// HeadTimeout and IdleTimeout: DefaultHeadTimeout and
	// DefaultIdleTimeout when zero.
	HeadTimeout, IdleTimeout time.Duration
	// DialTimeout bounds Dial (10 s when zero): a Dial that holds the
	// connection while the engine wakes needs longer.
	DialTimeout time.Duration
	// Answered, when set, is called as each answer of the engine's begins
	// to reach a client — its head written (not for ddinit's own
	// requests).
	Answered func()
	// Budget bounds the create bodies and large heads all proxies hold at
	// once, shared fairly by their clients (CreateBudget when nil).
	Budget *fairshare.Pool
	// Side, when set, makes all of this proxy's connections one client of
	// the budget ("windows": the frontend, however many connections it
	// opens); otherwise a client is a connection, or what a trusted
	// client says it passes on for (engineclient.ClientHeader).
	Side string
	// Trusted honours engineclient.InternalHeader and engineclient.ClientHeader from clients: only
	// on a socket no one but ddinit's own callers can reach. Otherwise
	// both are stripped from every request.
	Trusted bool
	// Identity, when set, is the engineclient.ClientHeader this proxy adds to every
	// request it passes on (a distro's proxy says which distro).
	Identity string
	Log      logrus.FieldLogger

	warn logs.Every
}

// PortReserver holds a container's published ports in the distro before
// it starts. Reserve fails, naming the port, when one is taken; release
// gives the ports up again when the start does not happen.
type PortReserver interface {
	Reserve(ctx context.Context, container string) (release func(), err error)
}

// conn is one client connection and the engine connection that serves it.
type conn struct {
	p      *Proxy
	ctx    context.Context
	id     string // the connection as a budget client
	client net.Conn
	src    io.Reader     // what br reads: the client, after what a large head's buffer held
	br     *bufio.Reader // the client's
	engine net.Conn      // opened at the first request
	ebr    *bufio.Reader
	// clientHeld and engineHeld are what replaced buffers held, read
	// before the connections themselves (see heldFirst).
	clientHeld, engineHeld []*heldFirst
	late                   *lateWatch
	// bigHead is what br's buffer took from the budget while a head over
	// smallBuffer was read.
	bigHead int64
}

// head is a request's or a response's head: the bytes that came, and
// what the proxy needs of them. Parsing only that keeps a request's cost
// to a few microseconds; everything else passes on as it came.
type head struct {
	raw          []byte
	method, path string // a request's; path as sent, without the query
	// route is the path as the engine's router matches it: decoded.
	route          string
	status         int   // a response's
	contentLength  int64 // -1: none given
	chunked        bool
	close          bool // the connection ends after this message
	expectContinue bool // a request's Expect: 100-continue
	contentType    string
	internal       bool   // a request of ddinit's own (engineclient.InternalHeader)
	client         string // who sent it, as a proxy before this one says (engineclient.ClientHeader)
}

// framing is how a message's body ends.
type framing struct {
	length  int64 // >= 0: this many bytes
	chunked bool
	toEOF   bool // until the connection closes
}

// body is a request's body: passed on raw, or rewritten.
type body struct {
	from      bufferedConn // the client's connection, read through its reader
	framing   framing
	rewritten []byte // set when prepare rewrote the body
	broken    bool   // prepare read part of it and stopped
	engineErr error  // the engine stopped taking the body (read once send returns)
}
