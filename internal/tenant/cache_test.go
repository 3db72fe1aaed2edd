package tenant_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/tenant"
)

// countingStore counts the reads of tenants, to tell a cache hit from a miss.
type countingStore struct {
	*fakeStore
	reads atomic.Int64
}

func (c *countingStore) TenantByID(ctx context.Context, id string) (tenant.Tenant, error) {
	c.reads.Add(1)
	return c.fakeStore.TenantByID(ctx, id)
}

// manualClock moves only when told.
type manualClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func cachedService(t *testing.T, ttl time.Duration) (*tenant.Service, *countingStore, *manualClock, tenant.Tenant) {
	t.Helper()
	clk := &manualClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	store := &countingStore{fakeStore: newFakeStore()}
	svc, err := tenant.NewService(store, tenant.Config{Now: clk.Now, CacheTTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	return svc, store, clk, mustCreate(t, svc, "acme")
}

// suspendInStore suspends the tenant behind the Service's back, as another replica would.
func suspendInStore(t *testing.T, store *countingStore, id string) {
	t.Helper()
	store.mu.Lock()
	defer store.mu.Unlock()
	tn := store.tenants[id]
	tn.Status = tenant.StatusSuspended
	tn.Version++
	store.tenants[id] = tn
}

func TestCachedSuspendedElsewhereSeenWithinTTL(t *testing.T) {
	svc, store, clk, tn := cachedService(t, time.Second)
	if got, err := svc.Cached(t.Context(), tn.ID); err != nil || !got.Active() {
		t.Fatalf("Cached = %+v, %v", got, err)
	}
	suspendInStore(t, store, tn.ID)
	clk.Advance(time.Second)
	got, err := svc.Cached(t.Context(), tn.ID)
	if err != nil || got.Active() {
		t.Fatalf("a tenant suspended elsewhere is still active after the TTL: %+v, %v", got, err)
	}
}

func TestCachedSuspendedHereSeenAtOnce(t *testing.T) {
	svc, _, _, tn := cachedService(t, time.Second)
	if _, err := svc.Cached(t.Context(), tn.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Suspend(t.Context(), tn.ID); err != nil {
		t.Fatal(err)
	}
	if got, err := svc.Cached(t.Context(), tn.ID); err != nil || got.Active() {
		t.Fatalf("suspended here, still active: %+v, %v", got, err)
	}
	if _, err := svc.Resume(t.Context(), tn.ID); err != nil {
		t.Fatal(err)
	}
	if got, err := svc.Cached(t.Context(), tn.ID); err != nil || !got.Active() {
		t.Fatalf("resumed here, still suspended: %+v, %v", got, err)
	}
}

// A read that ran while a suspension was not yet committed must not be cached.
func TestCachedReadRacingSuspendNotCached(t *testing.T) {
	svc, store, _, tn := cachedService(t, time.Second)
	store.beforeUpdate = func() {
		// Between the service's read and its write: a request reads the tenant still active.
		if got, err := svc.Cached(t.Context(), tn.ID); err != nil || !got.Active() {
			t.Errorf("Cached during the suspension = %+v, %v", got, err)
		}
	}
	if _, err := svc.Suspend(t.Context(), tn.ID); err != nil {
		t.Fatal(err)
	}
	if got, err := svc.Cached(t.Context(), tn.ID); err != nil || got.Active() {
		t.Fatalf("the read racing the suspension was cached: %+v, %v", got, err)
	}
}

func TestCachedDeletedHereSeenAtOnce(t *testing.T) {
	svc, _, _, tn := cachedService(t, time.Second)
	if _, err := svc.Cached(t.Context(), tn.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Delete(t.Context(), tn.ID, false); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Cached(t.Context(), tn.ID); !errs.Is(err, errs.NotFound) {
		t.Fatalf("deleted tenant: err = %v, want not found", err)
	}
}

func TestCachedHitMissAndOff(t *testing.T) {
	svc, store, clk, tn := cachedService(t, time.Second)
	for range 3 {
		if _, err := svc.Cached(t.Context(), tn.ID); err != nil {
			t.Fatal(err)
		}
	}
	if n := store.reads.Load(); n != 1 {
		t.Fatalf("3 reads within the TTL read the store %d times, want 1", n)
	}
	clk.Advance(time.Second)
	if _, err := svc.Cached(t.Context(), tn.ID); err != nil {
		t.Fatal(err)
	}
	if n := store.reads.Load(); n != 2 {
		t.Fatalf("after the TTL: %d store reads in all, want 2", n)
	}
	// Unknown tenants are not cached, and malformed IDs never reach the store.
	if _, err := svc.Cached(t.Context(), "ten_01jz8y3w6v6r3b5q8x9k2m4n7a"); !errs.Is(err, errs.NotFound) {
		t.Fatalf("unknown tenant: %v", err)
	}
	if _, err := svc.Cached(t.Context(), "nope"); !errs.Is(err, errs.NotFound) {
		t.Fatalf("malformed id: %v", err)
	}

	off, offStore, _, tn2 := cachedService(t, -1)
	for range 3 {
		if _, err := off.Cached(t.Context(), tn2.ID); err != nil {
			t.Fatal(err)
		}
	}
	if n := offStore.reads.Load(); n != 3 {
		t.Fatalf("cache off: %d store reads for 3 lookups", n)
	}
}

func TestCacheTTLBound(t *testing.T) {
	if _, err := tenant.NewService(newFakeStore(), tenant.Config{CacheTTL: tenant.MaxCacheTTL + time.Nanosecond}); err == nil {
		t.Fatal("a cache TTL above MaxCacheTTL was accepted")
	}
	if _, err := tenant.NewService(newFakeStore(), tenant.Config{CacheSize: -1}); err == nil {
		t.Fatal("a negative cache size was accepted")
	}
}
