package dockerproxy

import (
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/ddinit/ddinit/fairshare"
)

// CreateBudget is the budget the proxies of a process share unless given
// their own: sixteen creates of the largest size at once (thousands of
// real ones, a few KB each), four of them for one client; a client that
// holds nothing is served from the last two's worth whoever holds the
// rest.
var CreateBudget = &fairshare.Pool{Limit: 16 * maxCreateBody, Share: 4 * maxCreateBody, Reserve: 2 * maxCreateBody}

func (p *Proxy) budget() *fairshare.Pool {
	if p.Budget != nil {
		return p.Budget
	}
	return CreateBudget
}

// connIDs names connections as budget clients.
var connIDs atomic.Uint64

func newConnID() string { return fmt.Sprintf("conn/%d", connIDs.Add(1)) }

// budgetClient is who a request's create body is counted against: the
// proxy's side, a trusted proxy's client, or the connection.
func (c *conn) budgetClient(req head) string {
	switch {
	case c.p.Side != "":
		return "side/" + c.p.Side
	case c.p.Trusted && req.client != "":
		return "client/" + req.client
	}
	return c.id
}

// budgetedReader takes from the budget as a body of unknown length comes
// (chunked), step by step: a client holds what it sent, not the most it
// might send.
type budgetedReader struct {
	r      io.Reader
	pool   *fairshare.Pool
	client string
	read   int64
	taken  int64
}

const budgetStep = 64 << 10

// errCreateBudget is a create body met while its client's share of the
// budget, or the budget, is spent.
var errCreateBudget = errors.New("too many create requests are being read at once: try again")

func (b *budgetedReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.read += int64(n)
	for b.read > b.taken {
		if !b.pool.Take(b.client, budgetStep) {
			return n, errCreateBudget
		}
		b.taken += budgetStep
	}
	return n, err
}

// release gives back what the reader took.
func (b *budgetedReader) release() {
	if b.taken > 0 {
		b.pool.Give(b.client, b.taken)
		b.taken = 0
	}
}
