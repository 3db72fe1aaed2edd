package apikey

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
)

func TestRotateGrace(t *testing.T) {
	h := newHarness(t)
	k, oldRaw := h.create(t, CreateInput{})
	h.clk.Advance(time.Minute)
	rotatedAt := h.clk.Now()
	rotated, newRaw, err := h.svc.Rotate(as(t, adminA), k.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if newRaw == oldRaw || !rotated.PrevValidUntil.Equal(rotatedAt.Add(DefaultGrace)) {
		t.Fatalf("rotation: same raw %v, previous valid until %s", newRaw == oldRaw, rotated.PrevValidUntil)
	}
	newID, _, err := Parse(newRaw)
	if err != nil || newID != k.ID {
		t.Fatalf("the new raw key has ID %q (%v), want the same key %s", newID, err, k.ID)
	}
	stored := h.store.get(t, k.ID)
	if string(stored.PrevHash) != string(k.Hash) || string(stored.Hash) != string(rotated.Hash) || stored.PrevValidUntil != rotated.PrevValidUntil {
		t.Fatal("the store does not hold the rotation")
	}

	verify := func(raw string) error { _, err := h.svc.Verify(t.Context(), raw); return err }
	// During the grace period both secrets work.
	h.clk.Advance(DefaultGrace - time.Microsecond)
	if err := verify(oldRaw); err != nil {
		t.Fatalf("old secret just before the end of grace: %v", err)
	}
	if err := verify(newRaw); err != nil {
		t.Fatal(err)
	}
	// At the end of grace only the new one does.
	h.clk.Advance(time.Microsecond)
	requireRejected(t, verify(oldRaw))
	if err := verify(newRaw); err != nil {
		t.Fatal(err)
	}
}

func TestRotateAgainDropsThePreviousSecret(t *testing.T) {
	h := newHarness(t)
	k, raw1 := h.create(t, CreateInput{})
	_, raw2, err := h.svc.Rotate(as(t, adminA), k.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, raw3, err := h.svc.Rotate(as(t, adminA), k.ID, 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, err = h.svc.Verify(t.Context(), raw1)
	requireRejected(t, err)
	for _, raw := range []string{raw2, raw3} {
		if _, err := h.svc.Verify(t.Context(), raw); err != nil {
			t.Fatal(err)
		}
	}
	h.clk.Advance(2 * time.Hour)
	_, err = h.svc.Verify(t.Context(), raw2)
	requireRejected(t, err)
}

func TestRotateRefusals(t *testing.T) {
	h := newHarness(t)
	ctx := as(t, adminA)
	k, _ := h.create(t, CreateInput{ExpiresAt: h.clk.Now().Add(time.Hour)})

	for _, g := range []time.Duration{-time.Second, MaxGrace + time.Microsecond} {
		_, _, err := h.svc.Rotate(ctx, k.ID, g)
		requireField(t, err, "body.grace_period")
	}
	if _, _, err := h.svc.Rotate(ctx, k.ID, MaxGrace); err != nil {
		t.Fatalf("the largest grace was refused: %v", err)
	}

	// A rotation racing another: the store refuses a digest that changed since it was read.
	stale := h.store.get(t, k.ID)
	if _, _, err := h.svc.Rotate(ctx, k.ID, time.Minute); err != nil {
		t.Fatal(err)
	}
	current := h.store.get(t, k.ID)
	h.store.staleGet = &stale
	_, lost, err := h.svc.Rotate(ctx, k.ID, time.Minute)
	requireCode(t, err, errs.Conflict)
	if lost != "" {
		t.Fatal("the losing rotation returned a raw key")
	}
	h.store.staleGet = nil
	if got := h.store.get(t, k.ID); string(got.Hash) != string(current.Hash) {
		t.Fatal("the losing rotation changed the key")
	}

	_, _, err = h.svc.Rotate(ctx, goodID, 0)
	requireCode(t, err, errs.NotFound)
	_, _, err = h.svc.Rotate(t.Context(), k.ID, 0)
	requireCode(t, err, errs.Unauthenticated)

	h.clk.Advance(time.Hour)
	_, _, err = h.svc.Rotate(ctx, k.ID, 0)
	requireCode(t, err, errs.Conflict)

	k2, _ := h.create(t, CreateInput{})
	if _, err := h.svc.Revoke(ctx, k2.ID); err != nil {
		t.Fatal(err)
	}
	_, _, err = h.svc.Rotate(ctx, k2.ID, 0)
	requireCode(t, err, errs.Conflict)
}

func TestRotateWithConfiguredDefaultGrace(t *testing.T) {
	h := newHarness(t)
	svc := h.service(t, peppersOf(t, testPepper(t, "v1")), Options{DefaultGrace: time.Hour})
	k, _ := h.create(t, CreateInput{})
	rotated, _, err := svc.Rotate(as(t, adminA), k.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := h.clk.Now().Add(time.Hour); !rotated.PrevValidUntil.Equal(want) {
		t.Fatalf("previous valid until %s, want %s", rotated.PrevValidUntil, want)
	}
}

// A deadline set by RequireRotation refuses the key once passed — also from the verified-key
// cache of a replica that did not set it — and a rotation clears it.
func TestRequireRotation(t *testing.T) {
	h := newHarness(t)
	k, raw := h.create(t, CreateInput{})
	other := h.service(t, peppersOf(t, testPepper(t, "v1")), Options{}) // another replica
	verify := func(s *Service, raw string) error { _, err := s.Verify(t.Context(), raw); return err }
	const deadline = DefaultCacheTTL / 2 // shorter than the cache TTL: the cached entry decides
	got, err := h.svc.RequireRotation(as(t, adminA), k.ID, deadline)
	if err != nil {
		t.Fatal(err)
	}
	if !got.RotateBy.Equal(h.clk.Now().Add(deadline)) || !h.store.get(t, k.ID).RotateBy.Equal(got.RotateBy) {
		t.Fatalf("rotate by %v, stored %v", got.RotateBy, h.store.get(t, k.ID).RotateBy)
	}
	// Before the deadline the key works on both replicas; from the deadline on, on neither: the
	// other replica refuses from the entry it cached (the store cannot answer it), this one, which
	// keeps the key out of its cache after the change, from the store.
	h.clk.Advance(deadline - time.Microsecond)
	for _, s := range []*Service{h.svc, other} {
		if err := verify(s, raw); err != nil {
			t.Fatalf("before the deadline: %v", err)
		}
	}
	h.clk.Advance(time.Microsecond)
	h.store.err = errors.New("store down: only the cache can answer")
	requireRejected(t, verify(other, raw))
	h.store.err = nil
	requireRejected(t, verify(h.svc, raw))
	if !strings.Contains(h.log.String(), "rotation_overdue") {
		t.Fatalf("refusal reason not logged: %s", h.log.String())
	}

	// Rotating meets it: the new secret works, with no deadline left.
	rotated, newRaw, err := h.svc.Rotate(as(t, adminA), k.ID, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if !rotated.RotateBy.IsZero() || !h.store.get(t, k.ID).RotateBy.IsZero() {
		t.Fatal("the rotation left the deadline")
	}
	if err := verify(h.svc, newRaw); err != nil {
		t.Fatal(err)
	}

	// Refusals: out-of-range deadlines, another tenant's key, a revoked key.
	for _, d := range []time.Duration{-time.Second, MaxRotationDeadline + time.Second} {
		if _, err := h.svc.RequireRotation(as(t, adminA), k.ID, d); !errs.Is(err, errs.Invalid) {
			t.Fatalf("deadline %s: %v, want invalid", d, err)
		}
	}
	if _, err := h.svc.RequireRotation(as(t, adminB), k.ID, time.Hour); !errs.Is(err, errs.NotFound) {
		t.Fatalf("another tenant's key: %v, want not found", err)
	}
	if _, err := h.svc.Revoke(as(t, adminA), k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.RequireRotation(as(t, adminA), k.ID, time.Hour); !errs.Is(err, errs.Conflict) {
		t.Fatalf("revoked key: %v, want conflict", err)
	}
}
