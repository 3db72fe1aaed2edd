package balancer_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/balancer"
)

// clock is a fake Config.Now that moves only when told.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// seeded is a reproducible Config.Rand, safe for concurrent use.
func seeded(seed uint64) func() float64 {
	var mu sync.Mutex
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	return func() float64 {
		mu.Lock()
		defer mu.Unlock()
		return r.Float64()
	}
}

// newBalancer returns a balancer on a fake clock and a seeded source; mutate adjusts the config.
func newBalancer(t testing.TB, mutate func(*balancer.Config)) (*balancer.Balancer, *clock) {
	t.Helper()
	clk := newClock()
	cfg := balancer.Config{Now: clk.Now, Rand: seeded(1)}
	if mutate != nil {
		mutate(&cfg)
	}
	return balancer.New(cfg), clk
}

// cands returns candidates "agt_0", "agt_1", … of tenant ten_1 with the given weights.
func cands(weights ...float64) []balancer.Candidate {
	out := make([]balancer.Candidate, len(weights))
	for i, w := range weights {
		out[i] = balancer.Candidate{TenantID: "ten_1", AgentID: fmt.Sprintf("agt_%d", i), Weight: w}
	}
	return out
}

// shares picks n times (no calls in flight) and returns each agent's fraction of the picks.
func shares(t testing.TB, b *balancer.Balancer, cs []balancer.Candidate, skip func(string) bool, n int) map[string]float64 {
	t.Helper()
	counts := map[string]int{}
	for range n {
		c, ok := b.Pick(cs, skip)
		if !ok {
			t.Fatal("Pick found no candidate")
		}
		counts[c.AgentID]++
	}
	out := map[string]float64{}
	for id, k := range counts {
		out[id] = float64(k) / float64(n)
	}
	return out
}

// wantShares fails unless each agent's share is within tol of want (absent agents: 0).
func wantShares(t testing.TB, got, want map[string]float64, tol float64) {
	t.Helper()
	for id := range got {
		if _, ok := want[id]; !ok {
			want[id] = 0
		}
	}
	for id, w := range want {
		if math.Abs(got[id]-w) > tol {
			t.Errorf("share of %s = %.4f, want %.4f ± %.4f (all: %v)", id, got[id], w, tol, got)
		}
	}
}

// observe records n calls of latency lat on c, each ended at once.
func observe(b *balancer.Balancer, c balancer.Candidate, n int, lat time.Duration, failure bool) {
	for range n {
		b.Begin(c).End(balancer.Outcome{Latency: lat, Failure: failure})
	}
}

func ptr[T any](v T) *T { return &v }
