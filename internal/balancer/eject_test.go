package balancer_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/balancer"
)

// hooks records OnEject and OnReadmit calls.
type hooks struct {
	mu     sync.Mutex
	events []string
	until  []time.Time
}

func (h *hooks) install(c *balancer.Config) {
	c.OnEject = func(c balancer.Candidate, until time.Time) {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.events = append(h.events, "eject "+c.TenantID+"/"+c.AgentID)
		h.until = append(h.until, until)
	}
	c.OnReadmit = func(c balancer.Candidate) {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.events = append(h.events, "readmit "+c.TenantID+"/"+c.AgentID)
	}
}

func (h *hooks) take() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := h.events
	h.events = nil
	return out
}

func fail(b *balancer.Balancer, c balancer.Candidate, n int) {
	observe(b, c, n, time.Millisecond, true)
}

// TestEjectAfterConsecutiveFailures: EjectAfter-1 failures do not eject, a success in between
// resets the count, the EjectAfter-th consecutive failure ejects.
func TestEjectAfterConsecutiveFailures(t *testing.T) {
	h := &hooks{}
	b, clk := newBalancer(t, func(c *balancer.Config) { c.EjectAfter = 3; h.install(c) })
	c := cands(1)[0]

	fail(b, c, 2)
	observe(b, c, 1, time.Millisecond, false)
	fail(b, c, 2)
	if s := b.State(c.AgentID); s.Ejected || s.ConsecutiveFailures != 2 {
		t.Fatalf("after 2+success+2 failures: Ejected=%v ConsecutiveFailures=%d, want false, 2", s.Ejected, s.ConsecutiveFailures)
	}
	if got := h.take(); len(got) != 0 {
		t.Fatalf("hooks before the ejection: %v", got)
	}
	fail(b, c, 1)
	s := b.State(c.AgentID)
	wantUntil := clk.Now().Add(balancer.DefaultEjectBase)
	if !s.Ejected || !s.EjectedUntil.Equal(wantUntil) || s.Ejections != 1 || s.Ramp != 0 || s.ConsecutiveFailures != 0 {
		t.Fatalf("after the 3rd consecutive failure: %+v, want ejected until %v", s, wantUntil)
	}
	if diff := cmp.Diff([]string{"eject ten_1/agt_0"}, h.take()); diff != "" {
		t.Fatalf("hooks (-want +got):\n%s", diff)
	}
	if !h.until[0].Equal(wantUntil) {
		t.Errorf("OnEject until = %v, want %v", h.until[0], wantUntil)
	}
}

// TestEjectedReceivesNothing: until EjectedUntil an ejected agent is never picked (dynamic,
// static and sticky); from then on it is, and OnReadmit is called once.
func TestEjectedReceivesNothing(t *testing.T) {
	for _, static := range []bool{false, true} {
		h := &hooks{}
		b, clk := newBalancer(t, func(c *balancer.Config) { c.Static = static; h.install(c) })
		cs := cands(1, 100)
		fail(b, cs[1], balancer.DefaultEjectAfter)
		h.take()
		until := b.State(cs[1].AgentID).EjectedUntil

		clk.Advance(until.Sub(clk.Now()) - time.Nanosecond)
		wantShares(t, shares(t, b, cs, nil, 2000), map[string]float64{"agt_0": 1}, 0)
		for i := range 2000 {
			if c, _ := b.PickSticky(fmt.Sprint("key-", i), cs, nil); c.AgentID != "agt_0" {
				t.Fatalf("static=%v: PickSticky returned the ejected agent", static)
			}
		}
		if c, ok := b.Pick(cs[1:], nil); ok {
			t.Fatalf("static=%v: Pick over the ejected agent alone = %s, want none", static, c.AgentID)
		}
		if got := h.take(); len(got) != 0 {
			t.Fatalf("static=%v: hooks while ejected: %v", static, got)
		}

		clk.Advance(time.Nanosecond)
		if got := shares(t, b, cs, nil, 2000); got["agt_1"] == 0 {
			t.Fatalf("static=%v: re-admitted agent got nothing: %v", static, got)
		}
		if diff := cmp.Diff([]string{"readmit ten_1/agt_1"}, h.take()); diff != "" {
			t.Fatalf("static=%v: hooks (-want +got):\n%s", static, diff)
		}
	}
}

// TestGradualReadmission: after the ejection the agent's share grows with the ramp factor,
// 0.1 → 1 over RampUp.
func TestGradualReadmission(t *testing.T) {
	b, clk := newBalancer(t, func(c *balancer.Config) { c.Static = true })
	cs := cands(1, 1)
	fail(b, cs[1], balancer.DefaultEjectAfter)
	clk.Advance(balancer.DefaultEjectBase)

	prev := 0.0
	for _, step := range []struct {
		at   time.Duration
		ramp float64
	}{{0, 0.1}, {10 * time.Second, 0.4}, {20 * time.Second, 0.7}, {30 * time.Second, 1}} {
		if step.at > 0 {
			clk.Advance(10 * time.Second)
		}
		if got := b.State(cs[1].AgentID).Ramp; got < step.ramp-1e-9 || got > step.ramp+1e-9 {
			t.Fatalf("ramp %v after the ejection = %v, want %v", step.at, got, step.ramp)
		}
		got := shares(t, b, cs, nil, picks)["agt_1"]
		want := step.ramp / (1 + step.ramp)
		if got < want-tol || got > want+tol || got <= prev {
			t.Fatalf("share %v after the ejection = %.4f, want %.4f ± %v and above the previous %.4f", step.at, got, want, tol, prev)
		}
		prev = got
	}
}

// TestReejection: a failure during the ramp ejects again for twice as long, capped at EjectMax;
// a complete ramp without failure resets the doubling.
func TestReejection(t *testing.T) {
	h := &hooks{}
	b, clk := newBalancer(t, func(c *balancer.Config) {
		c.EjectAfter, c.EjectBase, c.EjectMax, c.RampUp = 2, 10*time.Second, 25*time.Second, 30*time.Second
		h.install(c)
	})
	c := cands(1)[0]
	fail(b, c, 2)
	for i, want := range []time.Duration{10 * time.Second, 20 * time.Second, 25 * time.Second, 25 * time.Second} {
		s := b.State(c.AgentID)
		if got := s.EjectedUntil.Sub(clk.Now()); got != want || s.Ejections != i+1 {
			t.Fatalf("ejection %d: %v long, Ejections=%d; want %v, %d", i+1, got, s.Ejections, want, i+1)
		}
		clk.Advance(want + 5*time.Second) // into the ramp
		fail(b, c, 1)                     // one failure is enough there
	}
	if got, want := len(h.take()), 4+1+4; got != want { // 1 + 4 ejections, 4 re-admissions
		t.Fatalf("%d hook calls, want %d", got, want)
	}

	// Complete this ramp, then fail again: back to EjectBase, and one failure is not enough.
	clk.Advance(25*time.Second + 30*time.Second)
	if s := b.State(c.AgentID); s.Ejected || s.Ramp != 1 || s.Ejections != 0 {
		t.Fatalf("after a complete ramp: %+v, want not ejected, ramp 1, Ejections 0", s)
	}
	fail(b, c, 1)
	if b.State(c.AgentID).Ejected {
		t.Fatal("one failure after a complete ramp ejected the agent")
	}
	fail(b, c, 1)
	if got := b.State(c.AgentID).EjectedUntil.Sub(clk.Now()); got != 10*time.Second {
		t.Fatalf("ejection after a complete ramp: %v, want 10s", got)
	}
}

// TestInFlightFailuresDoNotExtend: calls begun before the ejection (ended during the ejection or
// during the ramp) neither extend it nor eject again.
func TestInFlightFailuresDoNotExtend(t *testing.T) {
	h := &hooks{}
	b, clk := newBalancer(t, func(c *balancer.Config) { c.EjectAfter = 3; h.install(c) })
	c := cands(1)[0]
	var at []*balancer.Attempt
	for range 10 {
		at = append(at, b.Begin(c))
	}
	for _, a := range at[:5] {
		a.End(balancer.Outcome{Latency: time.Millisecond, Failure: true})
	}
	until := b.State(c.AgentID).EjectedUntil
	clk.Advance(time.Second)
	at[5].End(balancer.Outcome{Failure: true})
	at[6].End(balancer.Outcome{Failure: true})
	at[7].End(balancer.Outcome{Failure: true})
	clk.Advance(balancer.DefaultEjectBase) // into the ramp
	at[8].End(balancer.Outcome{Failure: true})
	s := b.State(c.AgentID)
	if !s.EjectedUntil.Equal(until) || s.Ejected || s.Ejections != 1 {
		t.Fatalf("after failures of calls begun before the ejection: %+v, want one ejection until %v", s, until)
	}
	if diff := cmp.Diff([]string{"eject ten_1/agt_0", "readmit ten_1/agt_0"}, h.take()); diff != "" {
		t.Fatalf("hooks (-want +got):\n%s", diff)
	}
	at[9].End(balancer.Outcome{Ignore: true})
	if got := b.InFlight(c.AgentID); got != 0 {
		t.Fatalf("InFlight = %d, want 0", got)
	}
}

// TestEjectionOff: EjectAfter < 0 never ejects.
func TestEjectionOff(t *testing.T) {
	b, _ := newBalancer(t, func(c *balancer.Config) { c.EjectAfter = -1 })
	c := cands(1)[0]
	fail(b, c, 100)
	if s := b.State(c.AgentID); s.Ejected || s.Ejections != 0 {
		t.Fatalf("with ejection off: %+v", s)
	}
	if _, ok := b.Pick([]balancer.Candidate{c}, nil); !ok {
		t.Fatal("Pick found no candidate")
	}
}
