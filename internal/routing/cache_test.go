package routing_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nops-kernel/nops/internal/routing"
)

// clock is a settable time source.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func route(tenantID, capability string, rev int64) routing.Route {
	return routing.Route{TenantID: tenantID, Capability: capability, Targets: []routing.Target{{Version: "1", Weight: 1}}, Revision: rev, CreatedAt: t0, UpdatedAt: t0}
}

// get calls Get and fails the test on error; it returns the revision read, 0 for no route.
func get(t *testing.T, c *routing.Cache, tenantID, capability string) int64 {
	t.Helper()
	r, err := c.Get(t.Context(), tenantID, capability)
	if err != nil {
		t.Fatalf("Get(%s, %s): %v", tenantID, capability, err)
	}
	if r == nil {
		return 0
	}
	if r.TenantID != tenantID || r.Capability != capability {
		t.Fatalf("Get(%s, %s) returned the route of %s, %s", tenantID, capability, r.TenantID, r.Capability)
	}
	return r.Revision
}

func TestCacheTTL(t *testing.T) {
	st := newFakeStore(tenantA)
	st.set(route(tenantA, "c", 1))
	clk := &clock{now: t0}
	c := routing.NewCache(st, 0, routing.CacheOptions{Now: clk.Now})
	if c.TTL() != routing.DefaultCacheTTL {
		t.Fatalf("TTL = %v, want the default %v", c.TTL(), routing.DefaultCacheTTL)
	}
	if got := get(t, c, tenantA, "c"); got != 1 || st.readCount() != 1 {
		t.Fatalf("first Get: revision %d, %d reads", got, st.readCount())
	}
	st.set(route(tenantA, "c", 2)) // another replica's change
	clk.advance(routing.DefaultCacheTTL - time.Nanosecond)
	if got := get(t, c, tenantA, "c"); got != 1 || st.readCount() != 1 {
		t.Fatalf("within the TTL: revision %d, %d reads; want the cached revision 1 and no read", got, st.readCount())
	}
	clk.advance(time.Nanosecond)
	if got := get(t, c, tenantA, "c"); got != 2 || st.readCount() != 2 {
		t.Fatalf("at the TTL: revision %d, %d reads; want revision 2 read again", got, st.readCount())
	}
	// Keys are per tenant and capability.
	if got := get(t, c, tenantB, "c"); got != 0 {
		t.Fatalf("tenant B sees tenant A's route: revision %d", got)
	}
}

func TestCacheNegative(t *testing.T) {
	st := newFakeStore(tenantA)
	clk := &clock{now: t0}
	c := routing.NewCache(st, time.Second, routing.CacheOptions{Now: clk.Now})
	for range 3 {
		if got := get(t, c, tenantA, "c"); got != 0 {
			t.Fatalf("revision %d of a route that does not exist", got)
		}
	}
	if st.readCount() != 1 {
		t.Fatalf("%d reads for a missing route within the TTL, want 1: no route is cached too", st.readCount())
	}
	st.set(route(tenantA, "c", 1))
	clk.advance(time.Second)
	if got := get(t, c, tenantA, "c"); got != 1 {
		t.Fatalf("a route created elsewhere is not seen after the TTL: revision %d", got)
	}
}

func TestCacheInvalidate(t *testing.T) {
	st := newFakeStore(tenantA)
	st.set(route(tenantA, "c", 1))
	st.set(route(tenantA, "d", 1))
	c := routing.NewCache(st, time.Hour, routing.CacheOptions{})
	get(t, c, tenantA, "c")
	get(t, c, tenantA, "d")
	st.set(route(tenantA, "c", 2))
	st.set(route(tenantA, "d", 2))
	c.Invalidate(tenantA, "c")
	if got := get(t, c, tenantA, "c"); got != 2 {
		t.Fatalf("after Invalidate: revision %d, want 2", got)
	}
	if got := get(t, c, tenantA, "d"); got != 1 {
		t.Fatalf("Invalidate of c dropped d: revision %d", got)
	}
	st.remove(tenantA, "c")
	c.Invalidate(tenantA, "c")
	if got := get(t, c, tenantA, "c"); got != 0 {
		t.Fatalf("a deleted route after Invalidate: revision %d", got)
	}
}

func TestCacheCoalescesMisses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newFakeStore(tenantA)
		st.set(route(tenantA, "c", 1))
		release := make(chan struct{})
		st.beforeRead = func() { <-release }
		c := routing.NewCache(st, time.Second, routing.CacheOptions{})
		const callers = 8
		var wg sync.WaitGroup
		got := make([]int64, callers)
		for i := range callers {
			wg.Go(func() {
				r, err := c.Get(context.Background(), tenantA, "c")
				if err == nil && r != nil {
					got[i] = r.Revision
				}
			})
		}
		synctest.Wait() // every caller waits: one on the store, the others on its read
		close(release)
		wg.Wait()
		if st.readCount() != 1 {
			t.Fatalf("%d concurrent misses made %d reads, want 1", callers, st.readCount())
		}
		for i, rev := range got {
			if rev != 1 {
				t.Fatalf("caller %d got revision %d", i, rev)
			}
		}
	})
}

// A caller that gives up does not fail the others waiting for the same read.
func TestCacheCallerCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newFakeStore(tenantA)
		st.set(route(tenantA, "c", 1))
		release := make(chan struct{})
		st.beforeRead = func() { <-release }
		c := routing.NewCache(st, time.Second, routing.CacheOptions{})
		ctx, cancel := context.WithCancel(context.Background())
		var firstErr, secondErr error
		var second *routing.Route
		var wg sync.WaitGroup
		wg.Go(func() { _, firstErr = c.Get(ctx, tenantA, "c") })
		synctest.Wait()
		wg.Go(func() { second, secondErr = c.Get(context.Background(), tenantA, "c") })
		synctest.Wait()
		cancel()
		synctest.Wait()
		close(release)
		wg.Wait()
		if !errors.Is(firstErr, context.Canceled) {
			t.Fatalf("the cancelled caller got %v", firstErr)
		}
		if secondErr != nil || second == nil || second.Revision != 1 {
			t.Fatalf("the other caller got %v, %v", second, secondErr)
		}
	})
}

// A read that began before a change must not put the old route back after Invalidate.
func TestCacheInvalidateDuringRead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newFakeStore(tenantA)
		st.set(route(tenantA, "c", 1))
		hold := make(chan struct{})
		c := routing.NewCache(&blockingReader{inner: st, hold: hold}, time.Hour, routing.CacheOptions{})
		var wg sync.WaitGroup
		var first *routing.Route
		wg.Go(func() { first, _ = c.Get(context.Background(), tenantA, "c") })
		synctest.Wait() // the read holds revision 1
		st.set(route(tenantA, "c", 2))
		c.Invalidate(tenantA, "c")
		close(hold)
		wg.Wait()
		if first == nil || first.Revision != 1 {
			t.Fatalf("the caller that began first got %v", first)
		}
		if got := get(t, c, tenantA, "c"); got != 2 {
			t.Fatalf("after Invalidate during a read: revision %d, want 2 (the old read was kept)", got)
		}
	})
}

// blockingReader reads the route, then waits until hold is closed before returning it: a read
// that took its row before a concurrent change.
type blockingReader struct {
	inner *fakeStore
	hold  chan struct{}
}

func (b *blockingReader) Route(ctx context.Context, tenantID, capability string) (routing.Route, error) {
	r, err := b.inner.Route(ctx, tenantID, capability)
	<-b.hold
	return r, err
}

func TestCacheServesStaleOnError(t *testing.T) {
	st := newFakeStore(tenantA)
	st.set(route(tenantA, "c", 1))
	clk := &clock{now: t0}
	c := routing.NewCache(st, time.Second, routing.CacheOptions{Now: clk.Now})
	get(t, c, tenantA, "c")
	st.mu.Lock()
	st.readErr = fmt.Errorf("database down")
	st.mu.Unlock()
	clk.advance(time.Hour)
	if got := get(t, c, tenantA, "c"); got != 1 {
		t.Fatalf("with the store down: revision %d, want the last one read", got)
	}
	// A key never read has nothing to fall back on.
	if r, err := c.Get(t.Context(), tenantA, "other"); err == nil {
		t.Fatalf("Get of an unread key with the store down = %v, nil; want the error", r)
	}
	st.mu.Lock()
	st.readErr = nil
	st.mu.Unlock()
	st.set(route(tenantA, "c", 2))
	if got := get(t, c, tenantA, "c"); got != 2 {
		t.Fatalf("after the store came back: revision %d", got)
	}
}

func TestCacheBounded(t *testing.T) {
	st := newFakeStore(tenantA)
	c := routing.NewCache(st, time.Hour, routing.CacheOptions{MaxEntries: 3})
	for i := range 10 {
		get(t, c, tenantA, fmt.Sprintf("c%d", i))
	}
	before := st.readCount()
	get(t, c, tenantA, "c9") // the latest is kept
	if st.readCount() != before {
		t.Fatal("the entry stored last was evicted")
	}
	for i := range 10 {
		get(t, c, tenantA, fmt.Sprintf("c%d", i))
	}
	if st.readCount()-before < 10-3 {
		t.Fatalf("%d re-reads of 10 keys in a cache of 3: it holds more than its bound", st.readCount()-before)
	}
}
