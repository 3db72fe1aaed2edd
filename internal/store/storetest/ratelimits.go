package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/ratelimit"
)

// RateLimitStore is what RunRateLimitOverrides needs: the override store and InTx.
type RateLimitStore interface {
	ratelimit.OverrideStore
	InTx(ctx context.Context, fn func(ctx context.Context) error) error
}

// RunRateLimitOverrides runs the ratelimit.OverrideStore suite. open must return a fresh store
// with every migration applied, on a database no other test uses, and close it through
// t.Cleanup.
func RunRateLimitOverrides(t *testing.T, open func(t *testing.T) RateLimitStore) {
	t.Run("round trip and order", func(t *testing.T) { t.Parallel(); testRateLimitRoundTrip(t, open(t)) })
	t.Run("upsert by kind and target", func(t *testing.T) { t.Parallel(); testRateLimitUpsert(t, open(t)) })
	t.Run("id taken by another target", func(t *testing.T) { t.Parallel(); testRateLimitIDConflict(t, open(t)) })
	t.Run("delete", func(t *testing.T) { t.Parallel(); testRateLimitDelete(t, open(t)) })
	t.Run("joins transaction", func(t *testing.T) { t.Parallel(); testRateLimitTransaction(t, open(t)) })
}

// Override IDs of the suite (valid ratelimit IDs, so the rows also pass the domain's checks).
const (
	rloA = "rlo_01jz8y3w6v6r3b5q8x9k2m4n7a"
	rloB = "rlo_01jz8y3w6v6r3b5q8x9k2m4n7b"
	rloC = "rlo_01jz8y3w6v6r3b5q8x9k2m4n7c"
	rloD = "rlo_01jz8y3w6v6r3b5q8x9k2m4n7d"
	rloE = "rlo_01jz8y3w6v6r3b5q8x9k2m4n7e"
)

func rlOverride(id string, kind ratelimit.OverrideKind, target string, limit int, at time.Time) ratelimit.Override {
	return ratelimit.Override{ID: id, Kind: kind, Target: target, Limit: limit, Period: time.Minute, Burst: 5,
		CreatedAt: at, UpdatedAt: at}
}

func storedOverride(o ratelimit.Override) ratelimit.Override {
	o.CreatedAt, o.UpdatedAt = stored(o.CreatedAt), stored(o.UpdatedAt)
	return o
}

func rlPut(t *testing.T, ctx context.Context, s ratelimit.OverrideStore, o ratelimit.Override) ratelimit.Override {
	t.Helper()
	got, err := s.PutRateLimitOverride(ctx, o)
	if err != nil {
		t.Fatalf("PutRateLimitOverride(%s): %v", o.ID, err)
	}
	return got
}

func rlList(t *testing.T, ctx context.Context, s ratelimit.OverrideStore) []ratelimit.Override {
	t.Helper()
	got, err := s.ListRateLimitOverrides(ctx)
	if err != nil {
		t.Fatalf("ListRateLimitOverrides: %v", err)
	}
	return got
}

func testRateLimitRoundTrip(t *testing.T, s RateLimitStore) {
	ctx := t.Context()
	if got := rlList(t, ctx, s); len(got) != 0 {
		t.Fatalf("ListRateLimitOverrides on an empty store = %v", got)
	}
	// Inserted out of order; the targets sort differently as bytes than in most locales
	// ("Z" < "a", "/" < "0").
	in := []ratelimit.Override{
		rlOverride(rloA, ratelimit.KindTenant, "ten_01jz8y3w6v6r3b5q8x9k2m4n7q", 0, base),
		rlOverride(rloB, ratelimit.KindRoute, "GET /v1/agents", 10, base.Add(time.Second)),
		rlOverride(rloC, ratelimit.KindCIDR, "2001:db8::/32", 1000, base.Add(2*time.Second)),
		rlOverride(rloD, ratelimit.KindCIDR, "10.0.0.0/8", 500, base.Add(3*time.Second)),
		rlOverride(rloE, ratelimit.KindRoute, "DELETE /v1/Zones", 1, base.Add(4*time.Second)),
	}
	in[2].Period, in[2].Burst = 24*time.Hour, 0
	in[3].Period = 1500 * time.Millisecond
	for _, o := range in {
		got := rlPut(t, ctx, s, o)
		if diff := cmp.Diff(storedOverride(o), got); diff != "" {
			t.Errorf("PutRateLimitOverride(%s) returned (-want +got):\n%s", o.ID, diff)
		}
	}
	want := []ratelimit.Override{storedOverride(in[3]), storedOverride(in[2]), storedOverride(in[4]), storedOverride(in[1]), storedOverride(in[0])}
	got := rlList(t, ctx, s)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ListRateLimitOverrides (-want +got):\n%s", diff)
	}
	for _, o := range got {
		checkUTC(t, o.ID+" CreatedAt", o.CreatedAt)
		checkUTC(t, o.ID+" UpdatedAt", o.UpdatedAt)
	}
}

func testRateLimitUpsert(t *testing.T, s RateLimitStore) {
	ctx := t.Context()
	first := rlPut(t, ctx, s, rlOverride(rloA, ratelimit.KindCIDR, "10.0.0.0/8", 100, base))
	// The same kind and target under a new ID, as a second Put through the API makes it.
	second := rlOverride(rloB, ratelimit.KindCIDR, "10.0.0.0/8", 7, base.Add(time.Hour))
	second.Period, second.Burst = 10*time.Second, 0
	got := rlPut(t, ctx, s, second)
	want := first
	want.Limit, want.Period, want.Burst, want.UpdatedAt = 7, 10*time.Second, 0, stored(second.UpdatedAt)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("upsert returned (-want +got):\n%s", diff)
	}
	// The same target under another kind is another override.
	other := rlPut(t, ctx, s, rlOverride(rloC, ratelimit.KindRoute, "10.0.0.0/8", 3, base))
	if diff := cmp.Diff([]ratelimit.Override{want, other}, rlList(t, ctx, s)); diff != "" {
		t.Errorf("ListRateLimitOverrides after the upsert (-want +got):\n%s", diff)
	}
}

func testRateLimitIDConflict(t *testing.T, s RateLimitStore) {
	ctx := t.Context()
	first := rlPut(t, ctx, s, rlOverride(rloA, ratelimit.KindCIDR, "10.0.0.0/8", 100, base))
	_, err := s.PutRateLimitOverride(ctx, rlOverride(rloA, ratelimit.KindCIDR, "192.0.2.0/24", 1, base))
	if got := errs.CodeOf(err); got != errs.Conflict {
		t.Fatalf("PutRateLimitOverride with a taken ID: error %v (code %q), want %q", err, got, errs.Conflict)
	}
	if diff := cmp.Diff([]ratelimit.Override{first}, rlList(t, ctx, s)); diff != "" {
		t.Errorf("a refused put changed the table (-want +got):\n%s", diff)
	}
}

func testRateLimitDelete(t *testing.T, s RateLimitStore) {
	ctx := t.Context()
	a := rlPut(t, ctx, s, rlOverride(rloA, ratelimit.KindCIDR, "10.0.0.0/8", 100, base))
	b := rlPut(t, ctx, s, rlOverride(rloB, ratelimit.KindTenant, "ten_01jz8y3w6v6r3b5q8x9k2m4n7q", 100, base))
	got, err := s.DeleteRateLimitOverride(ctx, rloA)
	if err != nil {
		t.Fatalf("DeleteRateLimitOverride: %v", err)
	}
	if diff := cmp.Diff(a, got); diff != "" {
		t.Errorf("DeleteRateLimitOverride returned (-want +got):\n%s", diff)
	}
	for _, id := range []string{rloA, rloC, ""} {
		_, err := s.DeleteRateLimitOverride(ctx, id)
		if got := errs.CodeOf(err); got != errs.NotFound {
			t.Errorf("DeleteRateLimitOverride(%q): error %v (code %q), want %q", id, err, got, errs.NotFound)
		}
	}
	if diff := cmp.Diff([]ratelimit.Override{b}, rlList(t, ctx, s)); diff != "" {
		t.Errorf("ListRateLimitOverrides after the delete (-want +got):\n%s", diff)
	}
}

func testRateLimitTransaction(t *testing.T, s RateLimitStore) {
	ctx := t.Context()
	kept := rlPut(t, ctx, s, rlOverride(rloA, ratelimit.KindCIDR, "10.0.0.0/8", 100, base))
	boom := errors.New("boom")
	err := s.InTx(ctx, func(ctx context.Context) error {
		rlPut(t, ctx, s, rlOverride(rloB, ratelimit.KindRoute, "GET /v1/agents", 1, base))
		upd := rlOverride(rloC, ratelimit.KindCIDR, "10.0.0.0/8", 1, base.Add(time.Hour))
		rlPut(t, ctx, s, upd)
		if got := rlList(t, ctx, s); len(got) != 2 || got[0].Limit != 1 {
			t.Errorf("ListRateLimitOverrides inside the transaction = %+v, want its own writes", got)
		}
		if _, err := s.DeleteRateLimitOverride(ctx, rloB); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("InTx = %v, want the callback's error", err)
	}
	if diff := cmp.Diff([]ratelimit.Override{kept}, rlList(t, ctx, s)); diff != "" {
		t.Errorf("overrides after rollback (-want +got):\n%s", diff)
	}
}
