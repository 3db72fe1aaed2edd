package token_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/token"
)

const (
	testPublishDelay   = time.Minute
	testReloadInterval = 10 * time.Second
)

func withRotation(cfg *token.Config) {
	cfg.PublishDelay, cfg.ReloadInterval = testPublishDelay, testReloadInterval
}

// jwksKIDs returns the kids svc publishes.
func jwksKIDs(t *testing.T, svc *token.Service) []string {
	t.Helper()
	b, err := svc.JWKS(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Keys []struct {
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, k := range doc.Keys {
		out = append(out, k.Kid)
	}
	return out
}

func states(t *testing.T, svc *token.Service) map[string]token.KeyState {
	t.Helper()
	keys, err := svc.Keys(t.Context())
	if err != nil {
		t.Fatalf("Keys: %v", err)
	}
	out := map[string]token.KeyState{}
	for _, k := range keys {
		out[k.ID] = k.State
	}
	return out
}

func rotate(t *testing.T, svc *token.Service) token.Rotation {
	t.Helper()
	r, err := svc.Rotate(t.Context(), "")
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	if err := svc.Reload(t.Context()); err != nil {
		t.Fatalf("Reload after Rotate: %v", err)
	}
	return r
}

// The whole life of a rotation on one replica: the new key is published before it signs, the old
// one verifies for TTL + leeway after it stopped signing, then is refused and unpublished.
func TestRotationLifecycle(t *testing.T) {
	for _, alg := range []string{token.AlgEdDSA, token.AlgES256, token.AlgHS256} {
		t.Run(alg, func(t *testing.T) {
			clk := newClock()
			store := newFakeStore()
			svc := newService(t, store, clk, alg, withRotation)
			oldKID := kidOf(t, issue(t, svc, someClaims))

			r := rotate(t, svc)
			newKID := r.Key.ID
			if newKID == oldKID || r.Key.Algorithm != alg || r.Key.State != token.StatePending {
				t.Fatalf("Rotate = %+v (old key %s)", r, oldKID)
			}
			if want := clk.Now().Add(testPublishDelay); !r.Key.ActivatesAt.Equal(want) {
				t.Errorf("activates at %s, want now + publish delay %s", r.Key.ActivatesAt, want)
			}
			if want := r.Key.ActivatesAt.Add(testTTL + testLeeway); !r.RetiresAt.Equal(want) || !slices.Equal(r.Superseded, []string{oldKID}) {
				t.Errorf("Rotate superseded %v retiring at %s, want [%s] at %s", r.Superseded, r.RetiresAt, oldKID, want)
			}

			// Published at once (asymmetric keys), but the old key still signs.
			if alg != token.AlgHS256 {
				if got := jwksKIDs(t, svc); len(got) != 2 || !slices.Contains(got, oldKID) || !slices.Contains(got, newKID) {
					t.Errorf("JWKS after Rotate = %v, want [%s %s]", got, oldKID, newKID)
				}
			}
			if got := states(t, svc); got[oldKID] != token.StateSigning || got[newKID] != token.StatePending {
				t.Errorf("states before activation = %v", got)
			}
			clk.Advance(testPublishDelay - time.Second)
			lastOld := issue(t, svc, someClaims)
			if kid := kidOf(t, lastOld); kid != oldKID {
				t.Fatalf("signs with %s before the new key activates, want %s", kid, oldKID)
			}

			// From the activation on, the new key signs; the old one verifies.
			clk.Advance(time.Second)
			first := issue(t, svc, someClaims)
			if kid := kidOf(t, first); kid != newKID {
				t.Fatalf("signs with %s at the activation, want %s", kid, newKID)
			}
			if got := states(t, svc); got[oldKID] != token.StateVerifying || got[newKID] != token.StateSigning {
				t.Errorf("states after activation = %v", got)
			}
			// lastOld expires (leeway included) a second before its key retires.
			clk.Advance(r.RetiresAt.Sub(clk.Now()) - 2*time.Second)
			if _, err := svc.Verify(t.Context(), lastOld); err != nil {
				t.Fatalf("the old key's last token is refused before its exp + leeway: %v", err)
			}
			if got := jwksKIDs(t, svc); alg != token.AlgHS256 && !slices.Contains(got, oldKID) {
				t.Errorf("JWKS drops the old key before it retires: %v", got)
			}

			// Retired: refused, unpublished, listed as retired, before and after a reload.
			clk.Advance(2 * time.Second)
			method, priv := storedSigner(t, store, oldKID)
			fresh := sign(t, method, priv, map[string]any{"kid": oldKID}, validClaims(clk))
			requireRejected(t, verifyErr(t, svc, fresh))
			requireRejected(t, verifyErr(t, svc, lastOld))
			if got := jwksKIDs(t, svc); slices.Contains(got, oldKID) {
				t.Errorf("JWKS still publishes the retired key: %v", got)
			}
			if got := states(t, svc); got[oldKID] != token.StateRetired || got[newKID] != token.StateSigning {
				t.Errorf("states after retirement = %v", got)
			}
			if err := svc.Reload(t.Context()); err != nil {
				t.Fatal(err)
			}
			requireRejected(t, verifyErr(t, svc, lastOld))
			if now := issue(t, svc, someClaims); kidOf(t, now) != newKID {
				t.Errorf("signs with %s after the retirement, want %s", kidOf(t, now), newKID)
			} else if _, err := svc.Verify(t.Context(), now); err != nil {
				t.Errorf("the new key's token is refused: %v", err)
			}
		})
	}
}

func verifyErr(t *testing.T, svc *token.Service, raw string) error {
	t.Helper()
	_, err := svc.Verify(t.Context(), raw)
	return err
}

// A token under a retired kid is refused from memory: it never makes the service read the store,
// so a flood of them costs nothing.
func TestRetiredKIDNeedsNoReload(t *testing.T) {
	clk := newClock()
	store := newFakeStore()
	svc := newService(t, store, clk, token.AlgEdDSA, withRotation)
	old := issue(t, svc, someClaims)
	r := rotate(t, svc)
	clk.Advance(r.RetiresAt.Sub(clk.Now()))
	if err := svc.Reload(t.Context()); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Hour) // the unknown-kid rate limit would allow a reload
	before := store.listCalls.Load()
	// The retired key's token, re-signed so it is not expired: only its kid is wrong.
	method, priv := storedSigner(t, store, kidOf(t, old))
	forged := sign(t, method, priv, map[string]any{"kid": kidOf(t, old)}, validClaims(clk))
	requireRejected(t, verifyErr(t, svc, forged))
	if n := store.listCalls.Load() - before; n != 0 {
		t.Errorf("verifying a retired kid read the store %d times", n)
	}
}

// Two replicas on one store: a rotation on one is held by the other after its periodic reload
// (Run), and both switch to the new key at its activation.
func TestRotationAcrossReplicas(t *testing.T) {
	clk := newClock()
	store := newFakeStore()
	fast := func(cfg *token.Config) { cfg.ReloadInterval, cfg.PublishDelay = 20*time.Millisecond, time.Minute }
	a := newService(t, store, clk, token.AlgEdDSA, fast)
	b := newService(t, store, clk, token.AlgEdDSA, fast)
	oldKID := kidOf(t, issue(t, b, someClaims))

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	r := rotate(t, a)
	// b picks the key up within a reload interval: it is published there too, not yet signing.
	waitFor(t, func() bool { return slices.Contains(jwksKIDs(t, b), r.Key.ID) })
	for name, svc := range map[string]*token.Service{"a": a, "b": b} {
		if kid := kidOf(t, issue(t, svc, someClaims)); kid != oldKID {
			t.Errorf("replica %s signs with %s before the activation, want %s", name, kid, oldKID)
		}
	}
	clk.Advance(time.Minute)
	for name, svc := range map[string]*token.Service{"a": a, "b": b} {
		raw := issue(t, svc, someClaims)
		if kid := kidOf(t, raw); kid != r.Key.ID {
			t.Errorf("replica %s signs with %s after the activation, want %s", name, kid, r.Key.ID)
		}
		for other, v := range map[string]*token.Service{"a": a, "b": b} {
			if _, err := v.Verify(t.Context(), raw); err != nil {
				t.Errorf("replica %s refuses replica %s's token: %v", other, name, err)
			}
		}
	}
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Rotations made on replicas whose clocks disagree still activate in the order they were made:
// the later rotation's key never activates before the earlier one's, so the earlier key cannot
// sign past its retirement.
func TestRotationsActivateInOrder(t *testing.T) {
	clk := newClock()
	behind := &clock{t: clk.Now().Add(-30 * time.Second)}
	store := newFakeStore()
	a := newService(t, store, clk, token.AlgEdDSA, withRotation)
	b := newService(t, store, behind, token.AlgEdDSA, withRotation)
	first := rotate(t, a)
	second, err := b.Rotate(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	if !second.Key.ActivatesAt.After(first.Key.ActivatesAt) {
		t.Fatalf("the second rotation's key activates at %s, not after the first's %s", second.Key.ActivatesAt, first.Key.ActivatesAt)
	}
	if !slices.Contains(second.Superseded, first.Key.ID) {
		t.Fatalf("the second rotation did not supersede the first's key: %v", second.Superseded)
	}
	if err := a.Reload(t.Context()); err != nil {
		t.Fatal(err)
	}
	// Until the second activation the first rotation's key signs, and it retires only after every
	// token it signed has expired.
	clk.Advance(first.Key.ActivatesAt.Sub(clk.Now()))
	late := issue(t, a, someClaims)
	if kid := kidOf(t, late); kid != first.Key.ID {
		t.Fatalf("signs with %s at the first activation, want %s", kid, first.Key.ID)
	}
	clk.Advance(second.Key.ActivatesAt.Sub(clk.Now()))
	if kid := kidOf(t, issue(t, a, someClaims)); kid != second.Key.ID {
		t.Fatalf("signs with %s at the second activation, want %s", kid, second.Key.ID)
	}
	clk.Advance(testTTL + testLeeway - time.Second)
	if _, err := a.Verify(t.Context(), late); err != nil {
		t.Fatalf("the first rotation's token is refused before its exp + leeway: %v", err)
	}
}

func TestRotateRefusals(t *testing.T) {
	t.Run("configured HS256 secret", func(t *testing.T) {
		clk := newClock()
		store := newFakeStore()
		svc := newService(t, store, clk, token.AlgHS256, withRotation, func(c *token.Config) {
			c.HS256Secret = []byte("0123456789abcdef0123456789abcdef")
		})
		_, err := svc.Rotate(t.Context(), "")
		if e := errs.As(err); e == nil || e.Code != errs.Conflict {
			t.Fatalf("Rotate with a configured secret = %v, want conflict", err)
		}
		if n := len(store.all()); n != 0 {
			t.Errorf("the refused rotation stored %d keys", n)
		}
		keys, err := svc.Keys(t.Context())
		if err != nil || len(keys) != 1 || !keys[0].FromConfig || keys[0].State != token.StateSigning {
			t.Errorf("Keys = %+v, %v; want the configured secret, signing", keys, err)
		}
	})
	for _, alg := range []string{token.AlgES256, "none", "HS512"} {
		t.Run("algorithm "+alg, func(t *testing.T) {
			clk := newClock()
			store := newFakeStore()
			svc := newService(t, store, clk, token.AlgEdDSA, withRotation)
			_, err := svc.Rotate(t.Context(), alg)
			if e := errs.As(err); e == nil || e.Code != errs.Invalid || len(e.Fields) != 1 || e.Fields[0].Name != "algorithm" {
				t.Fatalf("Rotate(%s) = %#v, want invalid naming algorithm", alg, err)
			}
			if n := len(store.all()); n != 1 {
				t.Errorf("the refused rotation left %d keys, want 1", n)
			}
		})
	}
	t.Run("store fails", func(t *testing.T) {
		clk := newClock()
		store := newFakeStore()
		svc := newService(t, store, clk, token.AlgEdDSA, withRotation)
		store.mu.Lock()
		store.createErr = errStoreDown
		store.mu.Unlock()
		if _, err := svc.Rotate(t.Context(), token.AlgEdDSA); err == nil {
			t.Fatal("Rotate succeeded with the store down")
		}
	})
}

func TestPublishDelayAtLeastReloadInterval(t *testing.T) {
	clk := newClock()
	cfg := testConfig(clk, token.AlgEdDSA)
	cfg.ReloadInterval, cfg.PublishDelay = time.Minute, 30*time.Second
	_, err := token.New(t.Context(), newFakeStore(), cfg, nil)
	if e := errs.As(err); e == nil || len(e.Fields) != 1 || e.Fields[0].Name != "publish_delay" {
		t.Fatalf("New with a publish delay below the reload interval = %v, want invalid publish_delay", err)
	}
}
