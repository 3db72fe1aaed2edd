package routing

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/nops-kernel/nops/internal/errs"
)

// DefaultCacheTTL is how long Cache serves a route it read, so that a change made on another
// replica is in force everywhere within a second.
const DefaultCacheTTL = 500 * time.Millisecond

// Bounds of the cache.
const (
	// DefaultCacheEntries bounds the entries kept. Capabilities are few, but a caller can invoke
	// names that exist nowhere, and their negative entries must not grow without end.
	DefaultCacheEntries = 10000
	// loadTimeout bounds one store read made for waiting callers. It runs apart from any caller's
	// context, so that one caller giving up does not fail the others waiting for the same key.
	loadTimeout = 5 * time.Second
)

// CacheOptions are a Cache's optional settings; the zero value works.
type CacheOptions struct {
	Now        func() time.Time // nil: time.Now
	MaxEntries int              // ≤ 0: DefaultCacheEntries
	Logger     *slog.Logger     // nil: discard
}

// Cache serves routes to the invoke path: each key (tenant, capability) is read from the store at
// most once per TTL, "no route" included, and concurrent misses of one key share one read. When
// a read fails and the cache still holds an expired entry for the key, it serves that entry (a
// database outage does not stop routing) and retries on the next call.
//
// Concurrency: safe for concurrent use. mu guards entries and gen; no I/O happens under it.
type Cache struct {
	reader Reader
	ttl    time.Duration
	now    func() time.Time
	max    int
	log    *slog.Logger
	group  singleflight.Group

	mu      sync.Mutex
	entries map[string]cacheEntry
	// gen grows with every Invalidate. A read stores its result only if gen did not move while it
	// ran: a read that began before a change must not put the old route back after Invalidate.
	gen uint64
}

type cacheEntry struct {
	route   *Route // nil: the key has no route
	expires time.Time
}

// NewCache returns a Cache over r that keeps what it read for ttl (≤ 0: DefaultCacheTTL).
func NewCache(r Reader, ttl time.Duration, opts CacheOptions) *Cache {
	if ttl <= 0 {
		ttl = DefaultCacheTTL
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = DefaultCacheEntries
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Cache{reader: r, ttl: ttl, now: opts.Now, max: opts.MaxEntries, log: opts.Logger, entries: map[string]cacheEntry{}}
}

// TTL returns how long an entry is served.
func (c *Cache) TTL() time.Duration { return c.ttl }

func cacheKey(tenantID, capability string) string { return tenantID + "\x00" + capability }

// Get returns the tenant's route of capability, nil (and no error) when it has none. The route is
// shared with other callers: treat it as read-only.
func (c *Cache) Get(ctx context.Context, tenantID, capability string) (*Route, error) {
	key := cacheKey(tenantID, capability)
	c.mu.Lock()
	e, ok := c.entries[key]
	c.mu.Unlock()
	if ok && c.now().Before(e.expires) {
		return e.route, nil
	}
	ch := c.group.DoChan(key, func() (any, error) { return c.load(ctx, key, tenantID, capability) })
	select {
	case res := <-ch:
		if res.Err == nil {
			return res.Val.(*Route), nil
		}
		if ok {
			// Stale if error: the route last read is a better answer than none.
			c.log.WarnContext(ctx, "route read failed; serving the expired entry", "tenant", tenantID, "capability", capability, "error", res.Err)
			return e.route, nil
		}
		return nil, res.Err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// load reads the key from the store and, unless an Invalidate happened meanwhile, keeps it.
func (c *Cache) load(ctx context.Context, key, tenantID, capability string) (*Route, error) {
	c.mu.Lock()
	gen := c.gen
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), loadTimeout)
	defer cancel()
	r, err := c.reader.Route(ctx, tenantID, capability)
	var route *Route
	switch {
	case errs.Is(err, errs.NotFound):
	case err != nil:
		return nil, fmt.Errorf("read route %s of %s: %w", capability, tenantID, err)
	case r.TenantID != tenantID || r.Capability != capability:
		// A row of another key (an adapter bug) is no route of this one.
	default:
		route = &r
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen == gen {
		c.store(key, cacheEntry{route: route, expires: c.now().Add(c.ttl)})
	}
	return route, nil
}

// store keeps e under key, making room first when the cache is full: expired entries go, then,
// if that was not enough, arbitrary ones (they are re-read on demand). c.mu is held.
func (c *Cache) store(key string, e cacheEntry) {
	if _, ok := c.entries[key]; !ok && len(c.entries) >= c.max {
		now := c.now()
		for k, old := range c.entries {
			if !now.Before(old.expires) {
				delete(c.entries, k)
			}
		}
		for k := range c.entries {
			if len(c.entries) < c.max {
				break
			}
			delete(c.entries, k)
		}
	}
	c.entries[key] = e
}

// Invalidate drops the key, so the next Get reads the store, and keeps a read already running
// from storing what it found.
func (c *Cache) Invalidate(tenantID, capability string) {
	key := cacheKey(tenantID, capability)
	c.mu.Lock()
	c.gen++
	delete(c.entries, key)
	c.mu.Unlock()
	// A Get after this must not join a read that began before the change.
	c.group.Forget(key)
}
