package fairshare

import (
	"fmt"
	"sync"
	"testing"
)

func TestOneClientTakesAtMostItsShare(t *testing.T) {
	p := &Pool{Limit: 256, Share: 32, Reserve: 16}
	for i := range 32 {
		if !p.Take("flood", 1) {
			t.Fatalf("take %d refused", i)
		}
	}
	if why := p.TakeWhy("flood", 1); why != OverShare {
		t.Fatalf("the 33rd: %v", why)
	}
	if !p.Take("other", 1) {
		t.Fatal("another client was refused")
	}
	p.Give("flood", 32)
	p.Give("other", 1)
	if p.Used() != 0 || p.Clients() != 0 {
		t.Fatalf("after giving back: used %d, %d clients", p.Used(), p.Clients())
	}
}

// However many greedy clients fill the pool, the reserve serves one that
// holds nothing; greedy ones cannot take it.
func TestReserveServesNewcomers(t *testing.T) {
	p := &Pool{Limit: 100, Share: 10, Reserve: 10}
	// Twelve greedy clients: nine fill all but the reserve, and each of
	// the other three gets one from it (it held nothing), no more.
	for c := range 12 {
		for p.Take(fmt.Sprint("greedy", c), 1) {
		}
	}
	if p.Used() != 93 {
		t.Fatalf("used %d, want 93", p.Used())
	}
	for c := range 12 {
		if p.Take(fmt.Sprint("greedy", c), 1) {
			t.Fatalf("greedy%d took from the reserve while holding", c)
		}
	}
	for i := range 7 {
		if !p.Take(fmt.Sprint("new", i), 1) {
			t.Fatalf("newcomer %d refused with %d used", i, p.Used())
		}
	}
	if why := p.TakeWhy("late", 1); why != Full {
		t.Fatalf("a full pool: %v", why)
	}
}

func TestDefaults(t *testing.T) {
	p := &Pool{Limit: 4}
	if !p.Take("a", 1) || p.Take("a", 1) {
		t.Fatal("the default share of 4 is 1")
	}
	p = &Pool{Limit: 2}
	if !p.Take("a", 1) || !p.Take("b", 1) || p.Take("c", 1) {
		t.Fatal("a limit of 2 with no reserve serves two clients")
	}
}

func TestGiveMoreThanHeldPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	p := &Pool{Limit: 10}
	p.Take("a", 1)
	p.Give("a", 2)
}

func TestConcurrentTakesNeverExceedTheLimit(t *testing.T) {
	p := &Pool{Limit: 64, Share: 64, Reserve: 1}
	var wg sync.WaitGroup
	var mu sync.Mutex
	granted := 0
	for c := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				if p.Take(fmt.Sprint(c), 1) {
					mu.Lock()
					granted++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if granted != int(p.Used()) || p.Used() > 64 {
		t.Fatalf("granted %d, used %d", granted, p.Used())
	}
}
