package apikey

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// countingStore counts the reads of keys, to tell a cache hit from a miss.
type countingStore struct {
	*memStore
	reads atomic.Int64
}

func (c *countingStore) APIKey(ctx context.Context, id string) (Key, error) {
	c.reads.Add(1)
	return c.memStore.APIKey(ctx, id)
}

// cached returns a Service with the verified-key cache on (ttl) over a counting store, and a key.
func cached(t *testing.T, ttl time.Duration) (*harness, *countingStore, Key, string) {
	t.Helper()
	h := newHarness(t)
	cs := &countingStore{memStore: h.store}
	svc, err := NewService(cs, peppersOf(t, testPepper(t, "v1")), h.clk.Now, h.log.logger(), Options{CacheTTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	h.svc = svc
	k, raw := h.create(t, CreateInput{ExpiresAt: h.clk.Now().Add(time.Hour)})
	return h, cs, k, raw
}

// revokeInStore revokes the key behind the Service's back, as another replica would.
func revokeInStore(t *testing.T, h *harness, id string) {
	t.Helper()
	if err := h.store.RevokeAPIKey(t.Context(), id, h.clk.Now().UTC().Truncate(time.Microsecond)); err != nil {
		t.Fatal(err)
	}
}

// Negative cases first: what the cache must never accept.

func TestCacheRevokedElsewhereRefusedWithinTTL(t *testing.T) {
	h, _, _, raw := cached(t, time.Second)
	k, err := h.svc.Verify(t.Context(), raw)
	if err != nil {
		t.Fatal(err)
	}
	revokeInStore(t, h, k.ID)
	h.clk.Advance(time.Second) // the cached entry's TTL has run out
	_, err = h.svc.Verify(t.Context(), raw)
	requireRejected(t, err)
}

func TestCacheRevokedHereRefusedAtOnce(t *testing.T) {
	h, _, _, raw := cached(t, time.Second)
	k, err := h.svc.Verify(t.Context(), raw)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Revoke(as(t, adminA), k.ID); err != nil {
		t.Fatal(err)
	}
	_, err = h.svc.Verify(t.Context(), raw)
	requireRejected(t, err)
}

// A Verify that read the row before a revocation committed (the revocation runs inside a
// transaction in internal/control) must not put the old row back in the cache.
func TestCacheStaleReadAfterRevokeNotCached(t *testing.T) {
	h, cs, _, raw := cached(t, time.Second)
	k, err := h.svc.Verify(t.Context(), raw)
	if err != nil {
		t.Fatal(err)
	}
	stale := cloneKey(h.store.keys[k.ID])
	if _, err := h.svc.Revoke(as(t, adminA), k.ID); err != nil {
		t.Fatal(err)
	}
	h.store.mu.Lock()
	h.store.staleGet = &stale // reads still see the key unrevoked: not yet committed
	h.store.mu.Unlock()
	if _, err := h.svc.Verify(t.Context(), raw); err != nil {
		t.Fatalf("uncommitted revocation: %v", err) // the stale row verifies, as without a cache
	}
	h.store.mu.Lock()
	h.store.staleGet = nil // committed
	h.store.mu.Unlock()
	before := cs.reads.Load()
	_, err = h.svc.Verify(t.Context(), raw)
	requireRejected(t, err)
	if cs.reads.Load() == before {
		t.Fatal("the row read before the commit was served from the cache")
	}
}

func TestCacheWrongSecretNeverHits(t *testing.T) {
	h, cs, _, raw := cached(t, time.Second)
	if _, err := h.svc.Verify(t.Context(), raw); err != nil {
		t.Fatal(err)
	}
	id, secret, _ := Parse(raw)
	before := cs.reads.Load()
	_, err := h.svc.Verify(t.Context(), format(id, otherSecret(secret)))
	requireRejected(t, err)
	if cs.reads.Load() != before+1 {
		t.Fatal("a wrong secret did not take the full verification")
	}
}

func TestCacheExpiryCheckedOnHit(t *testing.T) {
	h, cs, k, raw := cached(t, 2*time.Second)
	h.clk.Advance(time.Hour - time.Second)
	if _, err := h.svc.Verify(t.Context(), raw); err != nil {
		t.Fatal(err)
	}
	h.clk.Advance(time.Second) // expires while cached
	before := cs.reads.Load()
	_, err := h.svc.Verify(t.Context(), raw)
	requireRejected(t, err)
	if cs.reads.Load() != before {
		t.Fatalf("expected a hit refused by the clock; key expires %s", k.ExpiresAt)
	}
}

func TestCacheRotatedOutCheckedOnHit(t *testing.T) {
	h, _, k, oldRaw := cached(t, 2*time.Second)
	if _, _, err := h.svc.Rotate(as(t, adminA), k.ID, time.Minute); err != nil {
		t.Fatal(err)
	}
	h.clk.Advance(time.Minute - time.Second)
	if _, err := h.svc.Verify(t.Context(), oldRaw); err != nil {
		t.Fatalf("old secret within grace: %v", err)
	}
	h.clk.Advance(time.Second) // grace ends while the old secret is cached
	_, err := h.svc.Verify(t.Context(), oldRaw)
	requireRejected(t, err)
}

// Then what it is for: a hit skips the store.

func TestCacheHitAndMiss(t *testing.T) {
	h, cs, k, raw := cached(t, time.Second)
	for range 3 {
		got, err := h.svc.Verify(t.Context(), raw)
		if err != nil || got.ID != k.ID {
			t.Fatalf("Verify = %v, %v", got.ID, err)
		}
	}
	if n := cs.reads.Load(); n != 1 {
		t.Fatalf("3 verifications within the TTL read the store %d times, want 1", n)
	}
	h.clk.Advance(time.Second)
	if _, err := h.svc.Verify(t.Context(), raw); err != nil {
		t.Fatal(err)
	}
	if n := cs.reads.Load(); n != 2 {
		t.Fatalf("after the TTL the store was read %d times in all, want 2", n)
	}
	// What a caller does to the returned key does not reach the cache.
	got, _ := h.svc.Verify(t.Context(), raw)
	want := got.Hash[0]
	got.Hash[0] ^= 0xff
	again, _ := h.svc.Verify(t.Context(), raw)
	if again.Hash[0] != want {
		t.Fatal("the cached key shares its memory with a caller")
	}
}

func TestCacheOff(t *testing.T) {
	h, cs, _, raw := cached(t, -1)
	for range 3 {
		if _, err := h.svc.Verify(t.Context(), raw); err != nil {
			t.Fatal(err)
		}
	}
	if n := cs.reads.Load(); n != 3 {
		t.Fatalf("cache off: %d store reads for 3 verifications", n)
	}
}

func TestCacheTTLBound(t *testing.T) {
	h := newHarness(t)
	if _, err := NewService(h.store, peppersOf(t, testPepper(t, "v1")), nil, nil, Options{CacheTTL: MaxCacheTTL + time.Nanosecond}); err == nil {
		t.Fatal("a cache TTL above MaxCacheTTL was accepted")
	}
	if _, err := NewService(h.store, peppersOf(t, testPepper(t, "v1")), nil, nil, Options{CacheSize: -1}); err == nil {
		t.Fatal("a negative cache size was accepted")
	}
}
