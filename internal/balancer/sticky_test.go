package balancer_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/balancer"
)

// owners returns the agent PickSticky chooses for key-0 … key-(n-1).
func owners(t testing.TB, b *balancer.Balancer, cs []balancer.Candidate, skip func(string) bool, n int) []string {
	t.Helper()
	out := make([]string, n)
	for i := range out {
		c, ok := b.PickSticky(fmt.Sprint("key-", i), cs, skip)
		if !ok {
			t.Fatal("PickSticky found no candidate")
		}
		out[i] = c.AgentID
	}
	return out
}

func fractions(ids []string) map[string]float64 {
	out := map[string]float64{}
	for _, id := range ids {
		out[id] += 1 / float64(len(ids))
	}
	return out
}

// TestStickyStable: a key goes to the same agent every time, on every balancer (replica), in any
// candidate order, whatever the load and the scores; the mapping itself is pinned, because
// changing the hash moves every key.
func TestStickyStable(t *testing.T) {
	cs := []balancer.Candidate{
		{AgentID: "agt_01J0000000000000000000000A", Weight: 1},
		{AgentID: "agt_01J0000000000000000000000B", Weight: 2},
		{AgentID: "agt_01J0000000000000000000000C", Weight: 3},
	}
	golden := []struct{ key, agent string }{
		{"user-1", "agt_01J0000000000000000000000C"},
		{"user-2", "agt_01J0000000000000000000000C"},
		{"user-3", "agt_01J0000000000000000000000A"},
		{"user-4", "agt_01J0000000000000000000000B"},
		{"session:abc", "agt_01J0000000000000000000000B"},
		{"é", "agt_01J0000000000000000000000B"},
		{"x", "agt_01J0000000000000000000000C"},
		{"tenant/ten_1/conv/42", "agt_01J0000000000000000000000C"},
	}
	b1 := balancer.New(balancer.Config{})
	b2 := balancer.New(balancer.Config{Static: true})
	observe(b1, cs[0], 5, 1_000_000_000, false) // a slow agent keeps its keys
	b1.Begin(cs[1])                             // and a busy one
	rev := slices.Clone(cs)
	slices.Reverse(rev)
	for _, g := range golden {
		for i, pick := range []func() (balancer.Candidate, bool){
			func() (balancer.Candidate, bool) { return b1.PickSticky(g.key, cs, nil) },
			func() (balancer.Candidate, bool) { return b1.PickSticky(g.key, cs, nil) },
			func() (balancer.Candidate, bool) { return b2.PickSticky(g.key, rev, nil) },
		} {
			if c, ok := pick(); !ok || c.AgentID != g.agent {
				t.Errorf("pick %d of key %q = %s, %v; want %s", i, g.key, c.AgentID, ok, g.agent)
			}
		}
	}
}

// TestStickyDistribution: many keys spread in proportion to the static weights.
func TestStickyDistribution(t *testing.T) {
	b, _ := newBalancer(t, nil)
	got := fractions(owners(t, b, cands(1, 2, 7), nil, picks))
	wantShares(t, got, map[string]float64{"agt_0": 0.1, "agt_1": 0.2, "agt_2": 0.7}, tol)
}

// TestStickyRemoval: removing, skipping or ejecting an agent moves only its keys, spread over
// the others; its keys come back when it is eligible again, gradually during the ramp.
func TestStickyRemoval(t *testing.T) {
	b, clk := newBalancer(t, nil)
	cs := cands(1, 1, 1, 1, 1)
	const n = 10_000
	before := owners(t, b, cs, nil, n)
	gone := cs[2].AgentID

	check := func(name string, after []string) {
		t.Helper()
		moved := map[string]int{}
		for i := range before {
			switch {
			case before[i] != gone && after[i] != before[i]:
				t.Fatalf("%s: key-%d moved from %s to %s", name, i, before[i], after[i])
			case after[i] == gone:
				t.Fatalf("%s: key-%d still on the removed agent", name, i)
			case before[i] == gone:
				moved[after[i]]++
			}
		}
		if len(moved) != 4 {
			t.Fatalf("%s: the removed agent's keys went to %v, want all 4 others", name, moved)
		}
	}
	check("removed", owners(t, b, slices.Delete(slices.Clone(cs), 2, 3), nil, n))
	check("skipped", owners(t, b, cs, func(id string) bool { return id == gone }, n))
	fail(b, cs[2], balancer.DefaultEjectAfter)
	ejected := owners(t, b, cs, nil, n)
	check("ejected", ejected)

	clk.Advance(balancer.DefaultEjectBase + balancer.DefaultRampUp/2) // ramp 0.55
	mid := owners(t, b, cs, nil, n)
	back := 0
	for i := range mid {
		if mid[i] != before[i] && mid[i] != ejected[i] {
			t.Fatalf("during the ramp: key-%d on %s, want %s or %s", i, mid[i], before[i], ejected[i])
		}
		if mid[i] == gone {
			back++
		}
	}
	if had := fractions(before)[gone] * n; float64(back) < 0.2*had || float64(back) > 0.9*had {
		t.Fatalf("during the ramp %d of the agent's %v keys came back, want part of them", back, had)
	}
	clk.Advance(balancer.DefaultRampUp)
	if diff := cmp.Diff(before, owners(t, b, cs, nil, n)); diff != "" {
		t.Fatalf("after the ramp the mapping differs (-before +after):\n%s", diff)
	}
}

// TestStickyEmptyKey: no key means Pick, weighted.
func TestStickyEmptyKey(t *testing.T) {
	b, _ := newBalancer(t, nil)
	cs := cands(1, 3)
	counts := map[string]float64{}
	for range picks {
		c, _ := b.PickSticky("", cs, nil)
		counts[c.AgentID] += 1.0 / picks
	}
	wantShares(t, counts, map[string]float64{"agt_0": 0.25, "agt_1": 0.75}, tol)
}
