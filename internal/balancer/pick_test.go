package balancer_test

import (
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/nops-kernel/nops/internal/balancer"
)

const (
	picks = 20_000
	tol   = 0.015 // ±1.5 percentage points: more than 4 standard deviations at 20k picks
)

// TestWeightsHonoured: with equal scores and sequential calls the shares equal the static
// weights, in both modes.
func TestWeightsHonoured(t *testing.T) {
	for _, static := range []bool{false, true} {
		t.Run(map[bool]string{false: "dynamic", true: "static"}[static], func(t *testing.T) {
			b, _ := newBalancer(t, func(c *balancer.Config) { c.Static = static })
			got := shares(t, b, cands(1, 2, 7), nil, picks)
			wantShares(t, got, map[string]float64{"agt_0": 0.1, "agt_1": 0.2, "agt_2": 0.7}, tol)
		})
	}
}

// TestLatencyShiftsTraffic: an agent with 4× the latency average gets a quarter of the other's
// effective weight in dynamic mode, and an equal share in static mode.
func TestLatencyShiftsTraffic(t *testing.T) {
	for _, tc := range []struct {
		name   string
		static bool
		slow   float64
	}{
		{"dynamic", false, 0.2}, // 0.25 / 1.25
		{"static", true, 0.5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, _ := newBalancer(t, func(c *balancer.Config) { c.Static = tc.static })
			cs := cands(1, 1)
			observe(b, cs[0], 10, 10*time.Millisecond, false)
			observe(b, cs[1], 10, 40*time.Millisecond, false)
			got := shares(t, b, cs, nil, picks)
			wantShares(t, got, map[string]float64{"agt_0": 1 - tc.slow, "agt_1": tc.slow}, tol)
		})
	}
}

// TestPowerOfTwoChoices: the less-loaded of two equal candidates wins every time; with unequal
// weights the load is compared per unit of weight, so a light canary is not flooded merely for
// being idle, yet takes over when the heavy agent piles up calls.
func TestPowerOfTwoChoices(t *testing.T) {
	t.Run("equal weights", func(t *testing.T) {
		b, _ := newBalancer(t, nil)
		cs := cands(1, 1)
		for range 3 {
			b.Begin(cs[0]) // held in flight
		}
		got := shares(t, b, cs, nil, 2000)
		wantShares(t, got, map[string]float64{"agt_1": 1}, 0)
	})
	t.Run("canary idle, stable lightly loaded", func(t *testing.T) {
		b, _ := newBalancer(t, nil)
		cs := cands(9, 1)
		b.Begin(cs[0])
		// (0+1)/1 is not below (1+1)/9: the canary gets only the draws it wins first.
		got := shares(t, b, cs, nil, picks)
		wantShares(t, got, map[string]float64{"agt_0": 0.9, "agt_1": 0.1}, tol)
	})
	t.Run("stable overloaded", func(t *testing.T) {
		b, _ := newBalancer(t, nil)
		cs := cands(9, 1)
		for range 20 {
			b.Begin(cs[0])
		}
		// (0+1)/1 < (20+1)/9: every pick goes to the canary.
		got := shares(t, b, cs, nil, 2000)
		wantShares(t, got, map[string]float64{"agt_1": 1}, 0)
	})
	t.Run("static mode ignores load", func(t *testing.T) {
		b, _ := newBalancer(t, func(c *balancer.Config) { c.Static = true })
		cs := cands(1, 1)
		for range 3 {
			b.Begin(cs[0])
		}
		got := shares(t, b, cs, nil, picks)
		wantShares(t, got, map[string]float64{"agt_0": 0.5, "agt_1": 0.5}, tol)
	})
}

// TestEligibility: skipped candidates and candidates without a positive finite weight are
// never returned; one eligible candidate is returned; none gives false.
func TestEligibility(t *testing.T) {
	for _, static := range []bool{false, true} {
		b, _ := newBalancer(t, func(c *balancer.Config) { c.Static = static })
		cs := cands(1, 0, math.NaN(), math.Inf(1), -1, 1, 1)
		skip := func(id string) bool { return id == "agt_0" || id == "agt_6" }
		got := shares(t, b, cs, skip, 500)
		wantShares(t, got, map[string]float64{"agt_5": 1}, 0)

		if c, ok := b.Pick(cs[:5], skip); ok {
			t.Errorf("static=%v: Pick over ineligible candidates = %s, want none", static, c.AgentID)
		}
		if c, ok := b.Pick(nil, nil); ok {
			t.Errorf("static=%v: Pick(nil) = %s, want none", static, c.AgentID)
		}
		if c, ok := b.PickSticky("k", cs[:5], skip); ok {
			t.Errorf("static=%v: PickSticky over ineligible candidates = %s, want none", static, c.AgentID)
		}
	}
}

// TestManyCandidates: more candidates than Pick's stack buffers still follow the weights.
func TestManyCandidates(t *testing.T) {
	b, _ := newBalancer(t, nil)
	ws := make([]float64, 40)
	want := map[string]float64{}
	for i := range ws {
		ws[i] = 1
		if i == 39 {
			ws[i] = 41 // half of the total 80
		}
	}
	cs := cands(ws...)
	for i := range cs {
		want[cs[i].AgentID] = ws[i] / 80
	}
	wantShares(t, shares(t, b, cs, nil, picks), want, tol)
}

// TestHugeWeights: weights whose sum overflows still split in proportion, in Pick and in
// PickSticky.
func TestHugeWeights(t *testing.T) {
	b, _ := newBalancer(t, nil)
	cs := cands(math.MaxFloat64, math.MaxFloat64/3)
	want := map[string]float64{"agt_0": 0.75, "agt_1": 0.25}
	wantShares(t, shares(t, b, cs, nil, picks), want, tol)
	wantShares(t, fractions(owners(t, b, cs, nil, picks)), want, tol)
}

// TestTinyWeights: effective weights that underflow stay eligible and the pick still succeeds.
func TestTinyWeights(t *testing.T) {
	b, _ := newBalancer(t, nil)
	cs := cands(math.SmallestNonzeroFloat64, math.SmallestNonzeroFloat64)
	cs[0].Stale, cs[1].Stale = true, true
	if _, ok := b.Pick(cs, nil); !ok {
		t.Fatal("Pick over tiny weights found no candidate")
	}
}

// TestReportedFactors: a late heartbeat, no free capacity and a reported error rate lower the
// score by their factors, and the shares follow.
func TestReportedFactors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*balancer.Candidate)
		want   balancer.Factors
	}{
		{"stale", func(c *balancer.Candidate) { c.Stale = true },
			balancer.Factors{Freshness: 0.5, Latency: 1, Success: 1, Load: 1, Ramp: 1}},
		{"free capacity 0", func(c *balancer.Candidate) { c.Reported.FreeCapacity = ptr[int64](0) },
			balancer.Factors{Freshness: 1, Latency: 1, Success: 1, Load: 0.05, Ramp: 1}},
		{"free capacity 3", func(c *balancer.Candidate) { c.Reported.FreeCapacity = ptr[int64](3) },
			balancer.Factors{Freshness: 1, Latency: 1, Success: 1, Load: 1, Ramp: 1}},
		{"error rate 0.6", func(c *balancer.Candidate) { c.Reported.ErrorRate = ptr(0.6) },
			balancer.Factors{Freshness: 1, Latency: 1, Success: 0.4, Load: 1, Ramp: 1}},
		{"error rate 1", func(c *balancer.Candidate) { c.Reported.ErrorRate = ptr(1.0) },
			balancer.Factors{Freshness: 1, Latency: 1, Success: 0.05, Load: 1, Ramp: 1}},
		{"error rate NaN", func(c *balancer.Candidate) { c.Reported.ErrorRate = ptr(math.NaN()) },
			balancer.Factors{Freshness: 1, Latency: 1, Success: 1, Load: 1, Ramp: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, _ := newBalancer(t, nil)
			cs := cands(1, 1)
			tc.mutate(&cs[1])
			got := b.Scores(cs)
			if diff := cmp.Diff(tc.want, got[1], cmpopts.EquateApprox(0, 1e-12)); diff != "" {
				t.Fatalf("factors (-want +got):\n%s", diff)
			}
			s := tc.want.Score()
			wantShares(t, shares(t, b, cs, nil, picks), map[string]float64{"agt_0": 1 / (1 + s), "agt_1": s / (1 + s)}, tol)
		})
	}
}

// TestScores: the latency factor is relative to the best average among the candidates and
// floored at MinFactor; an agent without samples counts as the best; observed failures lower
// the success factor; static mode reports no factors but the ramp.
func TestScores(t *testing.T) {
	b, _ := newBalancer(t, nil)
	cs := cands(1, 1, 1, 1)
	observe(b, cs[0], 4, 10*time.Millisecond, false)
	observe(b, cs[1], 4, 40*time.Millisecond, false)
	observe(b, cs[2], 4, 10*time.Second, false)
	observe(b, cs[2], 1, 10*time.Second, true) // 1 failure in 5 samples (no ejection)
	want := []balancer.Factors{
		{Freshness: 1, Latency: 1, Success: 1, Load: 1, Ramp: 1},
		{Freshness: 1, Latency: 0.25, Success: 1, Load: 1, Ramp: 1},
		{Freshness: 1, Latency: 0.05, Success: 0.8, Load: 1, Ramp: 1},
		{Freshness: 1, Latency: 1, Success: 1, Load: 1, Ramp: 1}, // never seen
	}
	if diff := cmp.Diff(want, b.Scores(cs), cmpopts.EquateApprox(0, 1e-12)); diff != "" {
		t.Fatalf("factors (-want +got):\n%s", diff)
	}
	if got := want[1].Score(); math.Abs(got-0.25) > 1e-12 {
		t.Errorf("Score() = %v, want 0.25", got)
	}

	bs := balancer.New(balancer.Config{Static: true})
	observe(bs, cs[1], 4, 40*time.Millisecond, true)
	all1 := balancer.Factors{Freshness: 1, Latency: 1, Success: 1, Load: 1, Ramp: 1}
	if diff := cmp.Diff([]balancer.Factors{all1, all1}, bs.Scores(cs[:2])); diff != "" {
		t.Fatalf("static factors (-want +got):\n%s", diff)
	}
}
