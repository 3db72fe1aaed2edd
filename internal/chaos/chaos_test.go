package chaos

import (
	"context"
	"errors"
	"testing"
	"time"
)

func newEnabled(t *testing.T) *Chaos {
	t.Helper()
	c, err := New(true, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// errorsOf counts injected errors over n draws.
func errorsOf(t *testing.T, c *Chaos, target Target, n int) int {
	t.Helper()
	got := 0
	for range n {
		err := c.Inject(context.Background(), target)
		if err != nil {
			if !errors.Is(err, ErrInjected) {
				t.Fatalf("injected error %v does not wrap ErrInjected", err)
			}
			got++
		}
	}
	return got
}

func TestChaosErrorPercentages(t *testing.T) {
	c := newEnabled(t)
	const n = 10000
	if got := errorsOf(t, c, Agent, n); got != 0 {
		t.Fatalf("without rules: %d errors", got)
	}
	for _, tc := range []struct {
		percent  float64
		min, max int
	}{{0, 0, 0}, {100, n, n}, {25, 2000, 3000}, {50, 4500, 5500}} {
		if err := c.Set([]Rule{{Target: Agent, ErrorPercent: tc.percent}}); err != nil {
			t.Fatal(err)
		}
		if got := errorsOf(t, c, Agent, n); got < tc.min || got > tc.max {
			t.Fatalf("%v%%: %d errors of %d, want %d..%d", tc.percent, got, n, tc.min, tc.max)
		}
		// Other targets are untouched.
		if got := errorsOf(t, c, Bus, 100); got != 0 {
			t.Fatalf("bus with an agent rule: %d errors", got)
		}
	}
	if err := c.Set(nil); err != nil {
		t.Fatal(err)
	}
	if got := errorsOf(t, c, Agent, n); got != 0 {
		t.Fatalf("after clearing: %d errors", got)
	}
}

func TestChaosLatencyPercentages(t *testing.T) {
	c := newEnabled(t)
	draws := 0
	var next float64
	c.draw = func() float64 { draws++; return next }
	// A rule with latency draws once for the latency, once for the error.
	if err := c.Set([]Rule{{Target: Redis, Latency: time.Nanosecond, LatencyPercent: 30}}); err != nil {
		t.Fatal(err)
	}
	next = 29.9
	if err := c.Inject(context.Background(), Redis); err != nil || draws != 2 {
		t.Fatalf("err %v, draws %d", err, draws)
	}
	// Latency at 100% that outlasts the context: the context's error, not a wait.
	if err := c.Set([]Rule{{Target: Redis, Latency: MaxLatency, LatencyPercent: 100}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.Inject(ctx, Redis); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled latency: %v", err)
	}
	// Latency at 0%: never waits (a wait of a minute would be cancelled below).
	if err := c.Set([]Rule{{Target: Redis, Latency: MaxLatency, LatencyPercent: 0}}); err != nil {
		t.Fatal(err)
	}
	c.draw = func() float64 { return 0 }
	if err := c.Inject(ctx, Redis); err != nil {
		t.Fatalf("0%% latency: %v", err)
	}
}

func TestChaosDisabledRefusesRules(t *testing.T) {
	c, err := New(false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Set([]Rule{{Target: Database, ErrorPercent: 100}}); !errors.Is(err, ErrDisabled) {
		t.Fatalf("Set on a disabled chaos: %v", err)
	}
	if c.Enabled() || len(c.Rules()) != 0 || c.Inject(context.Background(), Database) != nil {
		t.Fatal("a disabled chaos holds or injects a rule")
	}
	var none *Chaos
	if none.Inject(context.Background(), Database) != nil || none.Enabled() {
		t.Fatal("a nil chaos injects")
	}
}

func TestChaosValidate(t *testing.T) {
	c := newEnabled(t)
	good := Rule{Target: Bus, ErrorPercent: 10}
	for _, tc := range []struct {
		rules []Rule
		field string
	}{
		{[]Rule{{Target: "disk"}}, "rules.0.target"},
		{[]Rule{good, good}, "rules.1.target"},
		{[]Rule{good, {Target: Agent, ErrorPercent: 100.5}}, "rules.1.error_percent"},
		{[]Rule{{Target: Agent, ErrorPercent: -1}}, "rules.0.error_percent"},
		{[]Rule{{Target: Agent, LatencyPercent: 101}}, "rules.0.latency_percent"},
		{[]Rule{{Target: Agent, Latency: -time.Second}}, "rules.0.latency"},
		{[]Rule{{Target: Agent, Latency: MaxLatency + 1}}, "rules.0.latency"},
	} {
		err := c.Set(tc.rules)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Fatalf("%+v: %v, want a field error on %s", tc.rules, err, tc.field)
		}
	}
	if len(c.Rules()) != 0 {
		t.Fatalf("invalid rules were kept: %v", c.Rules())
	}
	if err := c.Set([]Rule{good}); err != nil || len(c.Rules()) != 1 || c.Rules()[0] != good {
		t.Fatalf("valid rules: %v, %v", err, c.Rules())
	}
}

// FuzzValidate: whatever a client sends, Set either refuses it with a field error or keeps rules
// that hold the invariants Inject relies on.
func FuzzValidate(f *testing.F) {
	f.Add("agent", int64(0), 50.0, 100.0)
	f.Add("disk", int64(-1), -1.0, 101.0)
	f.Fuzz(func(t *testing.T, target string, latency int64, latencyPercent, errorPercent float64) {
		c := newEnabled(t)
		r := Rule{Target: Target(target), Latency: time.Duration(latency), LatencyPercent: latencyPercent, ErrorPercent: errorPercent}
		err := c.Set([]Rule{r})
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) || len(c.Rules()) != 0 {
				t.Fatalf("%+v: %v", r, err)
			}
			return
		}
		if r.Latency < 0 || r.Latency > MaxLatency || !(r.ErrorPercent >= 0 && r.ErrorPercent <= 100) || !(r.LatencyPercent >= 0 && r.LatencyPercent <= 100) {
			t.Fatalf("accepted %+v", r)
		}
	})
}
