package token_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/token"
)

// Every key the service stores is sealed with the KEK, bound to its ID: the store holds no clear
// material, and the sealed value holds none either.
func TestKeysSealedAtRest(t *testing.T) {
	for _, alg := range []string{token.AlgEdDSA, token.AlgES256, token.AlgRS256, token.AlgHS256} {
		t.Run(alg, func(t *testing.T) {
			store := newFakeStore()
			clk := newClock()
			svc := newService(t, store, clk, alg)
			if _, err := svc.Rotate(t.Context(), ""); err != nil {
				t.Fatalf("Rotate: %v", err)
			}
			keys := store.all()
			if len(keys) != 2 {
				t.Fatalf("%d stored keys, want the first and the rotated one", len(keys))
			}
			for _, k := range keys {
				if len(k.Private) != 0 {
					t.Fatalf("key %s stored with %d bytes in clear", k.ID, len(k.Private))
				}
				material := materialOf(t, k)
				if len(material) < 32 || bytes.Contains(k.Sealed, material[:16]) {
					t.Fatalf("key %s: the sealed value holds the material", k.ID)
				}
				// Bound to its ID: the same sealed value does not open for another key.
				if _, err := testSealer.Open(k.Sealed, token.SealAAD("key_other")); err == nil {
					t.Fatalf("key %s opens for another ID", k.ID)
				}
				if _, err := testSealer.Open(k.Sealed, []byte(k.ID)); err == nil {
					t.Fatalf("key %s opens with the bare ID (another kind's associated data)", k.ID)
				}
			}
		})
	}
}

// A restarted service opens the sealed keys: it verifies what it issued before and signs with
// the same key.
func TestSealedKeysSurviveRestart(t *testing.T) {
	store := newFakeStore()
	clk := newClock()
	first := newService(t, store, clk, token.AlgEdDSA)
	raw := issue(t, first, someClaims)
	again := newService(t, store, clk, token.AlgEdDSA)
	if _, err := again.Verify(t.Context(), raw); err != nil {
		t.Fatalf("after a restart: %v", err)
	}
	if got, want := kidOf(t, issue(t, again, someClaims)), kidOf(t, raw); got != want {
		t.Fatalf("after a restart the service signs with %s, want %s", got, want)
	}
	if n := len(store.all()); n != 1 {
		t.Fatalf("%d keys after a restart, want 1", n)
	}
}

// Keys stored in clear by an older kernel are sealed in place at start, retired ones too, and the
// same material keeps signing; a second start seals nothing.
func TestClearKeysSealedAtStart(t *testing.T) {
	clk := newClock()
	old := clk.Now().Add(-time.Hour)
	current := newStoredKey(t, token.AlgEdDSA, "key_current", old)
	retired := newStoredKey(t, token.AlgEdDSA, "key_retired", old.Add(-time.Hour))
	retired.RetiresAt = old
	store := newFakeStore(retired, current)
	signed := sign(t, jwtMethod(token.AlgEdDSA), mustPKCS8(t, current.Private), map[string]any{"kid": current.ID}, validClaims(clk))

	svc := newService(t, store, clk, token.AlgEdDSA)
	for _, k := range store.all() {
		want := current.Private
		if k.ID == retired.ID {
			want = retired.Private
		}
		if len(k.Private) != 0 || !bytes.Equal(materialOf(t, k), want) {
			t.Fatalf("key %s after the start: %d clear bytes, sealed value opens to the old material: %v",
				k.ID, len(k.Private), bytes.Equal(materialOf(t, k), want))
		}
	}
	if _, err := svc.Verify(t.Context(), signed); err != nil {
		t.Fatalf("a token signed before sealing: %v", err)
	}
	if got := kidOf(t, issue(t, svc, someClaims)); got != current.ID {
		t.Fatalf("signs with %s, want the sealed key %s", got, current.ID)
	}
	store.mu.Lock()
	calls := store.sealCalls
	store.mu.Unlock()
	if calls != 2 {
		t.Fatalf("%d seals at the first start, want 2", calls)
	}
	newService(t, store, clk, token.AlgEdDSA)
	store.mu.Lock()
	calls = store.sealCalls
	store.mu.Unlock()
	if calls != 2 {
		t.Fatalf("the second start sealed again (%d seals)", calls)
	}
}

// A store refusing to seal a clear key stops the start, naming the key.
func TestClearKeySealFailureStopsStart(t *testing.T) {
	clk := newClock()
	store := newFakeStore(newStoredKey(t, token.AlgEdDSA, "key_clear", clk.Now().Add(-time.Hour)))
	store.sealErr = errStoreDown
	_, err := token.New(t.Context(), store, testConfig(clk, token.AlgEdDSA), nil)
	if !errors.Is(err, errStoreDown) || !strings.Contains(err.Error(), "key_clear") {
		t.Fatalf("New = %v, want the store's error naming key_clear", err)
	}
	if k := store.all()[0]; len(k.Private) == 0 || len(k.Sealed) != 0 {
		t.Fatal("the failed seal changed the row")
	}
}

// A kernel started with another key file refuses to start, naming the key it cannot open; a
// retired key it cannot open does not matter.
func TestOtherKEKRefusesStart(t *testing.T) {
	clk := newClock()
	store := newFakeStore()
	newService(t, store, clk, token.AlgEdDSA)
	kid := store.all()[0].ID

	cfg := testConfig(clk, token.AlgEdDSA)
	cfg.Sealer = newKeyring("kek-other")
	_, err := token.New(t.Context(), store, cfg, nil)
	if err == nil || !strings.Contains(err.Error(), kid) || !strings.Contains(err.Error(), "key-encryption key") {
		t.Fatalf("New with another KEK = %v, want a refusal naming %s and the key-encryption key", err, kid)
	}
	if n := len(store.all()); n != 1 {
		t.Fatalf("the refused start stored keys: %d", n)
	}

	// The same key, retired: the other KEK starts, with a key of its own.
	store.mu.Lock()
	store.keys[0].RetiresAt = clk.Now().Add(-time.Second)
	store.mu.Unlock()
	svc, err := token.New(t.Context(), store, cfg, nil)
	if err != nil {
		t.Fatalf("New with another KEK and only a retired key it cannot open: %v", err)
	}
	if got := kidOf(t, issue(t, svc, someClaims)); got == kid {
		t.Fatal("signs with the retired key")
	}
}

// A sealed value copied onto another row does not open there: the start is refused, naming
// that row.
func TestSealedValueMovedToAnotherRow(t *testing.T) {
	clk := newClock()
	store := newFakeStore()
	newService(t, store, clk, token.AlgEdDSA)
	orig := store.all()[0]
	store.add(token.SigningKey{ID: "key_moved", Algorithm: token.AlgEdDSA, Sealed: orig.Sealed, CreatedAt: orig.CreatedAt.Add(-time.Minute)})
	_, err := token.New(t.Context(), store, testConfig(clk, token.AlgEdDSA), nil)
	if err == nil || !strings.Contains(err.Error(), "key_moved") {
		t.Fatalf("New = %v, want a refusal naming key_moved", err)
	}
}

// Once running, a key that does not open (stored by a replica with another key file) is skipped
// and logged, and the keys in use keep serving.
func TestReloadSkipsUnopenableKey(t *testing.T) {
	clk := newClock()
	store := newFakeStore()
	var logs syncBuffer
	cfg := testConfig(clk, token.AlgEdDSA)
	svc, err := token.New(t.Context(), store, cfg, newLogger(&logs))
	if err != nil {
		t.Fatal(err)
	}
	other := newStoredKey(t, token.AlgEdDSA, "key_foreign", clk.Now())
	sealed, err := newKeyring("kek-other").Seal(other.Private, token.SealAAD(other.ID))
	if err != nil {
		t.Fatal(err)
	}
	store.add(token.SigningKey{ID: other.ID, Algorithm: other.Algorithm, Sealed: sealed, CreatedAt: other.CreatedAt})
	if err := svc.Reload(t.Context()); err != nil {
		t.Fatalf("Reload with a foreign key: %v", err)
	}
	if !strings.Contains(logs.String(), "key_foreign") {
		t.Fatalf("the skipped key is not logged:\n%s", logs.String())
	}
	forged := sign(t, jwtMethod(token.AlgEdDSA), mustPKCS8(t, other.Private), map[string]any{"kid": other.ID}, validClaims(clk))
	_, err = svc.Verify(t.Context(), forged)
	requireRejected(t, err)
	if _, err := svc.Verify(t.Context(), issue(t, svc, someClaims)); err != nil {
		t.Fatalf("the keys in use stopped serving: %v", err)
	}
}

func TestNewRequiresSealer(t *testing.T) {
	clk := newClock()
	cfg := testConfig(clk, token.AlgEdDSA)
	cfg.Sealer = nil
	store := newFakeStore()
	if _, err := token.New(context.Background(), store, cfg, nil); err == nil || !strings.Contains(err.Error(), "sealer") {
		t.Fatalf("New without a sealer = %v", err)
	}
	if len(store.all()) != 0 {
		t.Fatal("New without a sealer stored a key")
	}
}
