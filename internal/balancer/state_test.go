package balancer_test

import (
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/balancer"
)

func wantLatency(t *testing.T, b *balancer.Balancer, id string, want time.Duration) {
	t.Helper()
	if got := b.State(id).Latency; got < want-time.Microsecond || got > want+time.Microsecond {
		t.Fatalf("latency average of %s = %v, want %v", id, got, want)
	}
}

// TestAveragesDecayByTime: samples fade by elapsed time (half every HalfLife), not by their
// number; samples at the same instant count equally.
func TestAveragesDecayByTime(t *testing.T) {
	b, clk := newBalancer(t, nil)
	c := cands(1)[0]
	observe(b, c, 1, 10*time.Millisecond, false)
	wantLatency(t, b, c.AgentID, 10*time.Millisecond)
	observe(b, c, 1, 30*time.Millisecond, false) // same instant: plain mean
	wantLatency(t, b, c.AgentID, 20*time.Millisecond)

	clk.Advance(balancer.DefaultHalfLife) // the two old samples now weigh 1 together
	observe(b, c, 1, 50*time.Millisecond, false)
	wantLatency(t, b, c.AgentID, 35*time.Millisecond) // (0.5·10 + 0.5·30 + 50) / 2

	clk.Advance(10 * balancer.DefaultHalfLife) // old evidence weighs 2/1024
	observe(b, c, 1, 5*time.Millisecond, false)
	if got := b.State(c.AgentID).Latency; got > 5100*time.Microsecond {
		t.Fatalf("latency average after 10 half-lives = %v, want about 5ms", got)
	}
}

// TestFailureLatency: a fast failure does not lower the latency average; a slow one raises it.
// Failures raise the error average.
func TestFailureLatency(t *testing.T) {
	b, _ := newBalancer(t, nil)
	c := cands(1)[0]
	observe(b, c, 1, 10*time.Millisecond, false)
	observe(b, c, 1, time.Millisecond, true)
	wantLatency(t, b, c.AgentID, 10*time.Millisecond)
	observe(b, c, 1, 40*time.Millisecond, true)
	wantLatency(t, b, c.AgentID, 20*time.Millisecond)
	if got := b.State(c.AgentID).ErrorRate; got < 2.0/3-1e-9 || got > 2.0/3+1e-9 {
		t.Fatalf("error average = %v, want 2/3", got)
	}
}

// TestEnd: End is idempotent, Ignore only lowers the in-flight count, and a zero Latency is
// measured from Begin.
func TestEnd(t *testing.T) {
	b, clk := newBalancer(t, nil)
	c := cands(1)[0]
	a1, a2 := b.Begin(c), b.Begin(c)
	if got := b.InFlight(c.AgentID); got != 2 {
		t.Fatalf("InFlight = %d, want 2", got)
	}
	a1.End(balancer.Outcome{Ignore: true, Failure: true})
	a1.End(balancer.Outcome{Latency: time.Second})
	if s := b.State(c.AgentID); s.InFlight != 1 || s.Latency != 0 || s.ErrorRate != 0 || s.ConsecutiveFailures != 0 {
		t.Fatalf("after an ignored and a repeated End: %+v, want 1 in flight and no samples", s)
	}
	clk.Advance(7 * time.Millisecond)
	a2.End(balancer.Outcome{})
	a2.End(balancer.Outcome{})
	if got := b.InFlight(c.AgentID); got != 0 {
		t.Fatalf("InFlight after repeated End = %d, want 0", got)
	}
	wantLatency(t, b, c.AgentID, 7*time.Millisecond)
	var nilAttempt *balancer.Attempt
	nilAttempt.End(balancer.Outcome{}) // must not panic
}

// TestForgetAndIdleEviction: Forget drops an agent's state at once; idle state goes after ten
// minutes, except while calls are in flight or the agent is ejected.
func TestForgetAndIdleEviction(t *testing.T) {
	b, clk := newBalancer(t, func(c *balancer.Config) { c.EjectBase = time.Hour; c.EjectMax = time.Hour })
	cs := cands(1, 1, 1, 1)
	observe(b, cs[0], 1, time.Millisecond, false) // idle
	held := b.Begin(cs[1])                        // in flight
	fail(b, cs[2], balancer.DefaultEjectAfter)    // ejected for an hour
	observe(b, cs[3], 1, time.Millisecond, false)

	b.Forget(cs[3].AgentID)
	if b.State(cs[3].AgentID).Known {
		t.Fatal("state survives Forget")
	}
	clk.Advance(9 * time.Minute)
	b.Begin(cs[3]).End(balancer.Outcome{Ignore: true}) // Begin sweeps
	if !b.State(cs[0].AgentID).Known {
		t.Fatal("state idle for 9 minutes dropped")
	}
	clk.Advance(2 * time.Minute)
	b.Begin(cs[3]).End(balancer.Outcome{Ignore: true})
	for i, want := range []bool{false, true, true, true} {
		if got := b.State(cs[i].AgentID).Known; got != want {
			t.Errorf("%s known after 11 idle minutes = %v, want %v", cs[i].AgentID, got, want)
		}
	}
	if !b.State(cs[2].AgentID).Ejected {
		t.Error("ejection lost by the sweep")
	}
	held.End(balancer.Outcome{})
	if got := b.InFlight(cs[1].AgentID); got != 0 {
		t.Errorf("InFlight = %d, want 0", got)
	}
	if s := b.State("agt_unknown"); s.Known || s.Ramp != 1 {
		t.Errorf("State of an unknown agent = %+v", s)
	}
}
