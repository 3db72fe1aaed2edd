package balancer_test

import (
	"container/heap"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/balancer"
)

// simAgent serves every call at once (no queue, like an agent that sleeps) in service(t), t
// the virtual time since the start, ±10%.
type simAgent struct {
	id      string
	service func(t time.Duration) time.Duration
}

type completion struct {
	at  time.Duration
	lat time.Duration
	att *balancer.Attempt
}

type completions []completion

func (h completions) Len() int           { return len(h) }
func (h completions) Less(i, j int) bool { return h[i].at < h[j].at }
func (h completions) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *completions) Push(x any)        { *h = append(*h, x.(completion)) }
func (h *completions) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// simulate runs Poisson arrivals at rate per second for dur of virtual time through a balancer
// and returns the p95 latency and each agent's share of the calls.
func simulate(t *testing.T, static bool, agents []simAgent, rate float64, dur time.Duration) (time.Duration, map[string]float64) {
	t.Helper()
	clk := newClock()
	start := clk.Now()
	b := balancer.New(balancer.Config{Static: static, Now: clk.Now, Rand: seeded(42)})
	cs := make([]balancer.Candidate, len(agents))
	for i, a := range agents {
		cs[i] = balancer.Candidate{TenantID: "ten_1", AgentID: a.id, Weight: 1}
	}
	r := rand.New(rand.NewPCG(7, 11))
	var pending completions
	var lats []time.Duration
	counts := map[string]float64{}
	now, next := time.Duration(0), time.Duration(0)
	setNow := func(d time.Duration) {
		clk.Advance(start.Add(d).Sub(clk.Now()))
		now = d
	}
	for next < dur || pending.Len() > 0 {
		if pending.Len() > 0 && (pending[0].at <= next || next >= dur) {
			c := heap.Pop(&pending).(completion)
			setNow(c.at)
			c.att.End(balancer.Outcome{Latency: c.lat})
			continue
		}
		setNow(next)
		next += time.Duration(r.ExpFloat64() / rate * float64(time.Second))
		c, ok := b.Pick(cs, nil)
		if !ok {
			t.Fatal("Pick found no candidate")
		}
		i := slices.IndexFunc(agents, func(a simAgent) bool { return a.id == c.AgentID })
		lat := time.Duration(float64(agents[i].service(now)) * (0.9 + 0.2*r.Float64()))
		heap.Push(&pending, completion{at: now + lat, lat: lat, att: b.Begin(c)})
		lats = append(lats, lat)
		counts[c.AgentID]++
	}
	for id := range counts {
		counts[id] /= float64(len(lats))
	}
	slices.Sort(lats)
	return lats[len(lats)*95/100], counts
}

func fmtShares(m map[string]float64) string {
	ids := slices.Sorted(maps.Keys(m))
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = fmt.Sprintf("%s %.1f%%", id, 100*m[id])
	}
	return strings.Join(parts, ", ")
}

func fixed(d time.Duration) func(time.Duration) time.Duration {
	return func(time.Duration) time.Duration { return d }
}

// TestSimulatedFleet: on a virtual fleet of 5/20/80 ms agents, and on one whose fast agent
// degrades to 200 ms half-way, dynamic weights cut the p95 latency by at least 30% against
// static equal weights (the goal). Virtual time: no sleeping, no wall-clock threshold.
func TestSimulatedFleet(t *testing.T) {
	const half = 60 * time.Second
	for _, tc := range []struct {
		name   string
		agents []simAgent
	}{
		{"5/20/80 ms", []simAgent{{"agt_fast", fixed(5 * time.Millisecond)}, {"agt_mid", fixed(20 * time.Millisecond)}, {"agt_slow", fixed(80 * time.Millisecond)}}},
		{"fast agent degrades", []simAgent{
			{"agt_fast", func(t time.Duration) time.Duration {
				if t < half {
					return 5 * time.Millisecond
				}
				return 200 * time.Millisecond
			}},
			{"agt_mid", fixed(20 * time.Millisecond)},
			{"agt_slow", fixed(80 * time.Millisecond)},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, rate := range []float64{50, 200} {
				static, ss := simulate(t, true, tc.agents, rate, 2*half)
				dynamic, ds := simulate(t, false, tc.agents, rate, 2*half)
				gain := 1 - float64(dynamic)/float64(static)
				t.Logf("%v/s: p95 static %v (shares %s), dynamic %v (shares %s): %.0f%% better", rate, static, fmtShares(ss), dynamic, fmtShares(ds), 100*gain)
				if gain < 0.3 {
					t.Errorf("%v/s: dynamic p95 %v is only %.0f%% better than static %v, want ≥ 30%%", rate, dynamic, 100*gain, static)
				}
			}
		})
	}
}
