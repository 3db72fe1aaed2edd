package invoke

import (
	"sync"

	"github.com/failsafe-go/failsafe-go/bulkhead"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"
)

// Breaker states as the metrics and hooks name them.
const (
	BreakerClosed   = "closed"
	BreakerHalfOpen = "half_open"
	BreakerOpen     = "open"
)

func breakerName(s circuitbreaker.State) string {
	switch s {
	case circuitbreaker.OpenState:
		return BreakerOpen
	case circuitbreaker.HalfOpenState:
		return BreakerHalfOpen
	default:
		return BreakerClosed
	}
}

// guard is an agent's circuit breaker and bulkhead.
type guard struct {
	tenant, agent string
	cb            circuitbreaker.CircuitBreaker[any]
	bh            bulkhead.Bulkhead[any]
	capacity      int
}

// releaseProbe gives back a half-open breaker's permit taken by an attempt that ended without
// evidence either way (cancelled hedge, refused egress). failsafe-go releases a permit only when
// a result is recorded, so an inconclusive probe counts as a success: the worse alternative is a
// breaker stuck half-open with no permits left. A still-bad agent re-opens it on its failures.
func (g *guard) releaseProbe() {
	if g.cb.IsHalfOpen() {
		g.cb.RecordSuccess()
	}
}

// guards keeps the guard of every agent the kernel has called.
type guards struct {
	cfg       Config
	m         *instruments
	onBreaker func(tenant, agentID, from, to string)

	mu sync.RWMutex
	by map[string]*guard
}

func newGuards(cfg Config, m *instruments, onBreaker func(tenant, agentID, from, to string)) *guards {
	return &guards{cfg: cfg, m: m, onBreaker: onBreaker, by: map[string]*guard{}}
}

func (gs *guards) get(tenant, agentID string) *guard {
	gs.mu.RLock()
	g, ok := gs.by[agentID]
	gs.mu.RUnlock()
	if ok {
		return g
	}
	gs.mu.Lock()
	defer gs.mu.Unlock()
	if g, ok := gs.by[agentID]; ok {
		return g
	}
	g = &guard{tenant: tenant, agent: agentID, capacity: gs.cfg.AgentInFlight}
	g.cb = circuitbreaker.NewBuilder[any]().
		WithFailureThreshold(gs.cfg.Breaker.Failures).
		WithDelay(gs.cfg.Breaker.Delay).
		WithSuccessThreshold(gs.cfg.Breaker.Successes).
		OnStateChanged(func(e circuitbreaker.StateChangedEvent) {
			from, to := breakerName(e.OldState), breakerName(e.NewState)
			gs.m.breakerChanged(tenant, agentID, to)
			if gs.onBreaker != nil {
				gs.onBreaker(tenant, agentID, from, to)
			}
		}).
		Build()
	g.bh = bulkhead.NewBuilder[any](uint(gs.cfg.AgentInFlight)).Build()
	gs.by[agentID] = g
	gs.m.breakerSeen(tenant, agentID)
	return g
}

// each calls fn for every guard (for the gauges).
func (gs *guards) each(fn func(g *guard)) {
	gs.mu.RLock()
	defer gs.mu.RUnlock()
	for _, g := range gs.by {
		fn(g)
	}
}
