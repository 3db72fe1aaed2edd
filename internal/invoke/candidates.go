package invoke

import (
	"context"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/nops-kernel/nops/internal/registry"
)

// Agents lists the agents a call may go to; *registry.Service implements it.
type Agents interface {
	Routable(ctx context.Context, tenantID, capability string) ([]registry.Agent, error)
}

// candidateCache keeps each (tenant, capability)'s routable agents for a short TTL, so the hot
// path does not query the database on every call. An agent registered or deregistered on any
// replica is seen within the TTL; a dead agent is avoided sooner by the balancer's ejection and
// the breakers, which react to the kernel's own failed attempts.
type candidateCache struct {
	agents Agents
	ttl    time.Duration
	now    func() time.Time

	mu    sync.Mutex
	m     map[candidateKey]candidateEntry
	group singleflight.Group
}

type candidateKey struct{ tenant, capability string }

type candidateEntry struct {
	agents []registry.Agent
	at     time.Time
}

// maxCandidateKeys bounds the cache; when full, expired entries are dropped, then all.
const maxCandidateKeys = 65536

func newCandidateCache(a Agents, ttl time.Duration, now func() time.Time) *candidateCache {
	return &candidateCache{agents: a, ttl: ttl, now: now, m: map[candidateKey]candidateEntry{}}
}

// get returns the routable agents; concurrent misses of one key share one query.
func (c *candidateCache) get(ctx context.Context, tenant, capability string) ([]registry.Agent, error) {
	k := candidateKey{tenant, capability}
	now := c.now()
	if c.ttl > 0 {
		c.mu.Lock()
		e, ok := c.m[k]
		c.mu.Unlock()
		if ok && now.Sub(e.at) < c.ttl {
			return e.agents, nil
		}
	}
	v, err, _ := c.group.Do(tenant+"\x00"+capability, func() (any, error) {
		// A query shared by several callers must not fail because the first caller left.
		agents, err := c.agents.Routable(context.WithoutCancel(ctx), tenant, capability)
		if err != nil {
			return nil, err
		}
		if c.ttl > 0 {
			c.mu.Lock()
			if len(c.m) >= maxCandidateKeys {
				for key, e := range c.m {
					if now.Sub(e.at) >= c.ttl {
						delete(c.m, key)
					}
				}
				if len(c.m) >= maxCandidateKeys {
					clear(c.m)
				}
			}
			c.m[k] = candidateEntry{agents: agents, at: c.now()}
			c.mu.Unlock()
		}
		return agents, nil
	})
	if err != nil {
		return nil, err
	}
	return v.([]registry.Agent), nil
}
