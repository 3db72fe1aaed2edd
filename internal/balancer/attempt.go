package balancer

import (
	"sync/atomic"
	"time"
)

// Outcome is how a call ended.
type Outcome struct {
	// Latency of the call; 0 or less: the time since Begin by Config.Now.
	Latency time.Duration
	// Failure marks a call the agent failed (error, timeout, 5xx); it counts towards ejection.
	Failure bool
	// Ignore marks a call that says nothing about the agent (cancelled by the caller, a hedge
	// that lost): only the in-flight count goes down.
	Ignore bool
}

// Attempt is one call in flight on an agent, from Begin to End.
type Attempt struct {
	b     *Balancer
	a     *agent
	c     Candidate
	start int64
	done  atomic.Bool
}

// Begin counts one call in flight on c's agent. The caller must End the returned Attempt, on
// every path (further Ends do nothing); an Attempt never ended keeps the agent looking busy.
func (b *Balancer) Begin(c Candidate) *Attempt {
	now := b.now()
	b.maybeSweep(now)
	return &Attempt{b: b, a: b.acquire(&c, now), c: c, start: now}
}

// End records the call's outcome and fires OnReadmit and OnEject as they apply. It is idempotent
// and safe to call from another goroutine than Begin's.
func (t *Attempt) End(o Outcome) {
	if t == nil || !t.done.CompareAndSwap(false, true) {
		return
	}
	b, a := t.b, t.a
	a.inflight.Add(-1)
	if o.Ignore {
		return
	}
	now := b.now()
	a.lastUsed.Store(now)
	lat := o.Latency
	if lat <= 0 {
		lat = time.Duration(now - t.start)
	}
	ev := a.record(&b.cfg, t.start, now, lat, o.Failure)
	if ev.readmitted && b.cfg.OnReadmit != nil {
		b.cfg.OnReadmit(t.c)
	}
	if ev.ejected && b.cfg.OnEject != nil {
		b.cfg.OnEject(t.c, b.wall(ev.until))
	}
}
