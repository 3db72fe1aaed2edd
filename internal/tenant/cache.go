package tenant

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Limits of the tenant cache that Cached reads through (Config.CacheTTL).
const (
	// DefaultCacheTTL is how long Cached serves a tenant from memory when Config.CacheTTL is 0.
	DefaultCacheTTL = time.Second
	// MaxCacheTTL bounds Config.CacheTTL: a suspension or deletion made by another replica takes
	// effect on this one's requests at most this late.
	MaxCacheTTL = 2 * time.Second
	// DefaultCacheSize bounds the cached tenants when Config.CacheSize is 0.
	DefaultCacheSize = 10000
)

// tenantCache keeps tenants read by Cached for at most ttl. Suspend, Resume and Delete of this
// process call forget, which drops the tenant and keeps it out of the cache for ttl, so a read
// that raced the change (or ran before its transaction committed) is never served.
//
// Concurrency: mu guards every field and is never held across I/O.
type tenantCache struct {
	ttl  time.Duration
	size int

	mu      sync.Mutex
	entries map[string]cachedTenant
	bypass  map[string]time.Time // tenant ID → until when it is not cached
	epoch   uint64               // grows with every forget
}

type cachedTenant struct {
	t     Tenant
	until time.Time
}

func (c *tenantCache) get(id string, now time.Time) (Tenant, bool, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[id]
	if !ok || !now.Before(e.until) {
		return Tenant{}, false, c.epoch
	}
	return e.t, true, c.epoch
}

// put caches t, read at a time when the epoch was epoch, unless a forget happened since, the
// tenant is kept out, or the cache is full of live entries.
func (c *tenantCache) put(t Tenant, now time.Time, epoch uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.epoch != epoch {
		return
	}
	if until, ok := c.bypass[t.ID]; ok {
		if now.Before(until) {
			return
		}
		delete(c.bypass, t.ID)
	}
	if _, ok := c.entries[t.ID]; !ok && len(c.entries) >= c.size {
		for id, e := range c.entries {
			if !now.Before(e.until) {
				delete(c.entries, id)
			}
		}
		if len(c.entries) >= c.size {
			return
		}
	}
	c.entries[t.ID] = cachedTenant{t: t, until: now.Add(c.ttl)}
}

func (c *tenantCache) forget(id string, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	delete(c.entries, id)
	if len(c.bypass) >= c.size {
		for b, until := range c.bypass {
			if !now.Before(until) {
				delete(c.bypass, b)
			}
		}
	}
	c.bypass[id] = now.Add(c.ttl)
}

// Cached returns the tenant with id like Get, but may serve it as it was read up to CacheTTL
// ago: it is the per-request check of the tenant's status on the request path
// (internal/httpapi), where a database read per request would cost more than the request.
// Suspend, Resume and Delete through this Service take effect at once; made by another replica
// (or in the database), within CacheTTL. A missing tenant is not cached.
func (s *Service) Cached(ctx context.Context, id string) (Tenant, error) {
	if s.cache == nil {
		return s.Get(ctx, id)
	}
	if !ValidID(id) {
		return Tenant{}, notFound()
	}
	t, hit, epoch := s.cache.get(id, s.now())
	if hit {
		return t, nil
	}
	t, err := s.store.TenantByID(ctx, id)
	if err != nil {
		return Tenant{}, fmt.Errorf("get tenant %s: %w", id, err)
	}
	s.cache.put(t, s.now(), epoch)
	return t, nil
}

// forget drops id from the cache and keeps it out for the cache's TTL from now. The changes
// call it after their write: a lookup that began before is not cached (the epoch moved), one
// cached before is dropped, and one that begins before the caller's transaction commits
// (internal/control runs the change in one) is not cached either.
func (s *Service) forget(id string, now time.Time) {
	if s.cache != nil {
		s.cache.forget(id, now)
	}
}
