package fairshare

import (
	"fmt"
	"sync"
)

// Pool is a limit shared by clients. The zero Share is Limit/4 (at least
// 1); the zero Reserve is Limit/8. A Pool must not be copied after use.
type Pool struct {
	// Limit is what all clients together may hold.
	Limit int64
	// Share is what one client may hold.
	Share int64
	// Reserve is the part of Limit a client that already holds something
	// may not take: it is kept for clients that hold nothing.
	Reserve int64

	mu   sync.Mutex
	used int64
	held map[string]int64
}

func (p *Pool) share() int64 {
	if p.Share > 0 {
		return p.Share
	}
	return max(1, p.Limit/4)
}

func (p *Pool) reserve() int64 {
	if p.Reserve > 0 {
		return p.Reserve
	}
	return p.Limit / 8
}

// Refusal says why a Take was refused.
type Refusal int

const (
	// Granted: not refused.
	Granted Refusal = iota
	// OverShare: the client would hold more than its share.
	OverShare
	// Full: the pool has no room for this client now.
	Full
)

func (r Refusal) String() string {
	switch r {
	case OverShare:
		return "over its share"
	case Full:
		return "the pool is full"
	}
	return "granted"
}

// Take gives client n more, or reports false when that would take it over
// its share or the pool over what it may give this client.
func (p *Pool) Take(client string, n int64) bool { return p.TakeWhy(client, n) == Granted }

// TakeWhy is Take saying why it refused.
func (p *Pool) TakeWhy(client string, n int64) Refusal {
	if n < 0 {
		panic(fmt.Sprintf("fairshare: Take(%q, %d)", client, n))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	h := p.held[client]
	if h+n > p.share() {
		return OverShare
	}
	room := p.Limit
	if h > 0 {
		room -= p.reserve()
	}
	if p.used+n > room {
		return Full
	}
	if p.held == nil {
		p.held = map[string]int64{}
	}
	p.used += n
	p.held[client] = h + n
	return Granted
}

// Give returns n that client took.
func (p *Pool) Give(client string, n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	h := p.held[client]
	if n > h {
		panic(fmt.Sprintf("fairshare: %q gives %d, holds %d", client, n, h))
	}
	p.used -= n
	if h == n {
		delete(p.held, client)
	} else {
		p.held[client] = h - n
	}
}

// Used is what all clients hold now.
func (p *Pool) Used() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.used
}

// Held is what client holds now.
func (p *Pool) Held(client string) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.held[client]
}

// Clients is how many clients hold something now.
func (p *Pool) Clients() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.held)
}
