package ratelimit_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/ratelimit"
)

func TestOverridePutRefusesInvalidInput(t *testing.T) {
	ov, _ := openOverrides(t, newClock())
	minute := time.Minute
	for _, tt := range []struct {
		name  string
		in    ratelimit.OverrideInput
		field string
	}{
		{"unknown kind", ratelimit.OverrideInput{Kind: "user", Target: "x", Limit: 1, Period: minute}, "kind"},
		{"CIDR with host bits", ratelimit.OverrideInput{Kind: ratelimit.KindCIDR, Target: "10.0.0.1/8", Limit: 1, Period: minute}, "target"},
		{"CIDR that is no address", ratelimit.OverrideInput{Kind: ratelimit.KindCIDR, Target: "example.com", Limit: 1, Period: minute}, "target"},
		{"IPv4-mapped CIDR", ratelimit.OverrideInput{Kind: ratelimit.KindCIDR, Target: "::ffff:10.0.0.0/104", Limit: 1, Period: minute}, "target"},
		{"zoned address", ratelimit.OverrideInput{Kind: ratelimit.KindCIDR, Target: "fe80::1%eth0", Limit: 1, Period: minute}, "target"},
		{"tenant name instead of ID", ratelimit.OverrideInput{Kind: ratelimit.KindTenant, Target: "acme", Limit: 1, Period: minute}, "target"},
		{"route without method", ratelimit.OverrideInput{Kind: ratelimit.KindRoute, Target: "/v1/agents", Limit: 1, Period: minute}, "target"},
		{"route with lower-case method", ratelimit.OverrideInput{Kind: ratelimit.KindRoute, Target: "get /v1/agents", Limit: 1, Period: minute}, "target"},
		{"route with spaces in the path", ratelimit.OverrideInput{Kind: ratelimit.KindRoute, Target: "GET /v1/a b", Limit: 1, Period: minute}, "target"},
		{"negative limit", ratelimit.OverrideInput{Kind: ratelimit.KindCIDR, Target: "10.0.0.0/8", Limit: -1, Period: minute}, "limit"},
		{"no period", ratelimit.OverrideInput{Kind: ratelimit.KindCIDR, Target: "10.0.0.0/8", Limit: 0}, "period"},
		{"period under a second", ratelimit.OverrideInput{Kind: ratelimit.KindCIDR, Target: "10.0.0.0/8", Limit: 1, Period: 999 * time.Millisecond}, "period"},
		{"period over a day", ratelimit.OverrideInput{Kind: ratelimit.KindCIDR, Target: "10.0.0.0/8", Limit: 1, Period: 24*time.Hour + time.Second}, "period"},
		{"period with microseconds", ratelimit.OverrideInput{Kind: ratelimit.KindCIDR, Target: "10.0.0.0/8", Limit: 1, Period: time.Second + time.Microsecond}, "period"},
		{"burst on unlimited", ratelimit.OverrideInput{Kind: ratelimit.KindCIDR, Target: "10.0.0.0/8", Limit: 0, Period: minute, Burst: 1}, "burst"},
		{"negative burst", ratelimit.OverrideInput{Kind: ratelimit.KindCIDR, Target: "10.0.0.0/8", Limit: 1, Period: minute, Burst: -1}, "burst"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ov.Put(t.Context(), tt.in)
			e := errs.As(err)
			if e == nil || e.Code != errs.Invalid || len(e.Fields) != 1 || e.Fields[0].Name != tt.field {
				t.Fatalf("Put = %v, want an invalid error naming %s", err, tt.field)
			}
		})
	}
	if list, err := ov.List(t.Context()); err != nil || len(list) != 0 {
		t.Fatalf("List after refused puts = %v, %v", list, err)
	}
}

func TestOverridesService(t *testing.T) {
	c := newClock()
	ov, _ := openOverrides(t, c)
	ctx := t.Context()

	for _, id := range []string{"", "rlo_x", "rlo_01JZ8Y3W6V6R3B5Q8X9K2M4N7A", "rlo_01jz8y3w6v6r3b5q8x9k2m4n7a"} {
		if _, err := ov.Delete(ctx, id); errs.CodeOf(err) != errs.NotFound {
			t.Errorf("Delete(%q) = %v, want not found", id, err)
		}
		if _, err := ov.Get(ctx, id); errs.CodeOf(err) != errs.NotFound {
			t.Errorf("Get(%q) = %v, want not found", id, err)
		}
	}

	a, err := ov.Put(ctx, ratelimit.OverrideInput{Kind: ratelimit.KindCIDR, Target: "192.0.2.7", Limit: 10, Period: time.Minute, Burst: 2})
	if err != nil {
		t.Fatal(err)
	}
	if !ratelimit.ValidOverrideID(a.ID) || !strings.HasPrefix(a.ID, "rlo_") || a.Target != "192.0.2.7/32" ||
		!a.CreatedAt.Equal(c.Now()) || !a.UpdatedAt.Equal(c.Now()) {
		t.Fatalf("Put = %+v", a)
	}
	if r := a.Rule(); r != (ratelimit.Rule{Name: ratelimit.RulePerIP, Limit: 10, Period: time.Minute, Burst: 2}) {
		t.Fatalf("Rule = %+v", r)
	}
	c.Advance(time.Hour)
	b, err := ov.Put(ctx, ratelimit.OverrideInput{Kind: ratelimit.KindCIDR, Target: "192.0.2.7/32", Limit: 20, Period: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if b.ID != a.ID || !b.CreatedAt.Equal(a.CreatedAt) || !b.UpdatedAt.Equal(c.Now()) || b.Limit != 20 || b.Burst != 0 {
		t.Fatalf("second Put of the same target = %+v, want the first's ID and creation time", b)
	}
	if got, err := ov.Get(ctx, a.ID); err != nil || got != b {
		t.Fatalf("Get = %+v, %v, want %+v", got, err, b)
	}

	// The cache changes on Refresh only.
	if got := ov.Cached(); len(got) != 0 {
		t.Fatalf("Cached before Refresh = %+v", got)
	}
	if err := ov.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got := ov.Cached(); len(got) != 1 || got[0] != b {
		t.Fatalf("Cached after Refresh = %+v", got)
	}
	d, err := ov.Delete(ctx, a.ID)
	if err != nil || d != b {
		t.Fatalf("Delete = %+v, %v", d, err)
	}
	if err := ov.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got := ov.Cached(); len(got) != 0 {
		t.Fatalf("Cached after Delete and Refresh = %+v", got)
	}
}

// TestOverridesReplicasConverge: a change made through one replica's service reaches another
// replica's limiter through Run's periodic refresh.
func TestOverridesReplicasConverge(t *testing.T) {
	c := newClock()
	writer, st := openOverrides(t, c)
	reader := ratelimit.NewOverrides(st, ratelimit.OverridesOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- reader.Run(ctx, 10*time.Millisecond) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	l := newLimiter(t, ratelimit.Config{PerIP: rule(100)}, ratelimit.Options{Now: c.Now, Overrides: reader})
	put(t, writer, ratelimit.KindCIDR, "203.0.113.0/24", 1)

	deadline := time.Now().Add(10 * time.Second)
	for len(reader.Cached()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the other replica never saw the override")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := allowedOf(t, l, ratelimit.Request{IP: ipA}, 5); got != 1 {
		t.Fatalf("%d of 5 allowed after the override reached the replica, want 1", got)
	}
}
