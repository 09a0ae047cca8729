package dockerproxy

import "sync/atomic"

// Budget bounds the bytes of create bodies and large heads held at once,
// across every proxy that shares it: a burst of slow or large creates (or
// heads) is answered 503 (try again) past it, never buffered without end.
type Budget struct {
	Limit int64
	used  atomic.Int64
}

// CreateBudget is the budget the proxies share unless given their own:
// sixteen creates of the largest size at once, thousands of real ones.
var CreateBudget = &Budget{Limit: 16 * maxCreateBody}

func (p *Proxy) budget() *Budget {
	if p.Budget != nil {
		return p.Budget
	}
	return CreateBudget
}

// take reserves n bytes, or reports false when they are not there.
func (b *Budget) take(n int64) bool {
	for {
		used := b.used.Load()
		if used+n > b.Limit {
			return false
		}
		if b.used.CompareAndSwap(used, used+n) {
			return true
		}
	}
}

// give returns n bytes taken.
func (b *Budget) give(n int64) { b.used.Add(-n) }
