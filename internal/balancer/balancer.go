package balancer

import (
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of Config.
const (
	DefaultHalfLife    = 10 * time.Second
	DefaultEjectAfter  = 5
	DefaultEjectBase   = 10 * time.Second
	DefaultEjectMax    = 5 * time.Minute
	DefaultRampUp      = 30 * time.Second
	DefaultStaleFactor = 0.5
	DefaultMinFactor   = 0.05
)

const (
	// rampStart is the ramp factor at the moment an ejection ends.
	rampStart = 0.1
	// idleEvict is how long an agent's state survives without a Begin or End.
	idleEvict = 10 * time.Minute
	// sweepEvery bounds how often Begin looks for idle state to drop.
	sweepEvery = time.Minute
	// minLatency keeps the latency ratio finite: sub-microsecond differences are noise for a
	// network call.
	minLatency = float64(time.Microsecond)
	// stackCands candidates are handled without a heap allocation in Pick.
	stackCands = 16
)

// Config is the balancer's optional settings; the zero value works (dynamic mode with the
// defaults above). Zero or negative durations, counts and factors take their default, except
// EjectAfter < 0, which turns ejection off.
type Config struct {
	// Static selects by static weight only (weighted random; no score, no power-of-two-choices).
	// Ejection and re-admission still apply.
	Static bool
	// HalfLife of the latency and error averages, in time (default 10 s).
	HalfLife time.Duration
	// EjectAfter consecutive failures eject an agent (default 5; < 0: never eject).
	EjectAfter int
	// EjectBase is the first ejection's length (default 10 s); it doubles on each re-ejection up
	// to EjectMax (default 5 m; raised to EjectBase when below it).
	EjectBase time.Duration
	EjectMax  time.Duration
	// RampUp is how long a re-admitted agent's ramp factor takes to grow from 0.1 to 1
	// (default 30 s).
	RampUp time.Duration
	// StaleFactor is the freshness factor of an agent whose heartbeat is late (default 0.5).
	StaleFactor float64
	// MinFactor floors every score factor but ramp (default 0.05; at most 1).
	MinFactor float64
	// OnEject and OnReadmit are called, outside locks, when an agent is ejected and when its
	// re-admission is first noticed (see the package doc).
	OnEject   func(c Candidate, until time.Time)
	OnReadmit func(c Candidate)
	// Now is the clock (default time.Now). Only differences between its readings are used.
	Now func() time.Time
	// Rand returns a uniform value in [0,1) (default math/rand/v2's Float64). It must be safe
	// for concurrent use when the balancer is used concurrently.
	Rand func() float64
}

func (c Config) withDefaults() Config {
	if c.HalfLife <= 0 {
		c.HalfLife = DefaultHalfLife
	}
	if c.EjectAfter == 0 {
		c.EjectAfter = DefaultEjectAfter
	}
	if c.EjectBase <= 0 {
		c.EjectBase = DefaultEjectBase
	}
	if c.EjectMax <= 0 {
		c.EjectMax = DefaultEjectMax
	}
	if c.EjectMax < c.EjectBase {
		c.EjectMax = c.EjectBase
	}
	if c.RampUp <= 0 {
		c.RampUp = DefaultRampUp
	}
	if !(c.MinFactor > 0) { // also NaN
		c.MinFactor = DefaultMinFactor
	}
	c.MinFactor = math.Min(c.MinFactor, 1)
	if !(c.StaleFactor > 0) {
		c.StaleFactor = DefaultStaleFactor
	}
	c.StaleFactor = math.Min(math.Max(c.StaleFactor, c.MinFactor), 1)
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Rand == nil {
		c.Rand = rand.Float64
	}
	return c
}

// Reported is what an agent's last heartbeat said about itself; nil means not reported.
type Reported struct {
	InFlight     *int64
	FreeCapacity *int64
	ErrorRate    *float64 // 0..1
	P95Ms        *float64
}

// Candidate is an agent the caller allows for this call.
type Candidate struct {
	TenantID string
	AgentID  string // globally unique; the balancer's state is keyed by it
	// Weight is the static weight from the routing table (callers pass 1 without one). A
	// candidate whose Weight is not a positive finite number is never picked.
	Weight float64
	// Stale marks an agent whose heartbeat is late: still routable, ranked lower.
	Stale    bool
	Reported Reported
}

// Balancer holds the per-agent state behind the selection. Create it with New.
type Balancer struct {
	cfg   Config
	epoch time.Time // Now() at New; the agents' times are nanoseconds since it (monotonic)

	mu     sync.RWMutex // guards agents; never taken while an agent's mu is held
	agents map[string]*agent

	nextSweep atomic.Int64 // when Begin next looks for idle state
}

// New returns a Balancer with cfg's settings (zero fields take their defaults).
func New(cfg Config) *Balancer {
	cfg = cfg.withDefaults()
	b := &Balancer{cfg: cfg, epoch: cfg.Now(), agents: make(map[string]*agent)}
	b.nextSweep.Store(int64(sweepEvery))
	return b
}

// now is the time since the epoch. time.Time.Sub uses the monotonic reading when both have one,
// so wall-clock steps do not disturb averages or ejections.
func (b *Balancer) now() int64 { return int64(b.cfg.Now().Sub(b.epoch)) }

func (b *Balancer) wall(t int64) time.Time { return b.epoch.Add(time.Duration(t)) }

// lookup appends the state of each candidate's agent (nil when unknown) to dst.
func (b *Balancer) lookup(dst []*agent, cands []Candidate) []*agent {
	b.mu.RLock()
	for i := range cands {
		dst = append(dst, b.agents[cands[i].AgentID])
	}
	b.mu.RUnlock()
	return dst
}

// Pick chooses one of cands (see the package doc), never one for which skip (may be nil)
// returns true, one that is ejected or one without a positive weight. It returns false when no
// candidate is eligible. Pick does not count the call: Begin does.
func (b *Balancer) Pick(cands []Candidate, skip func(agentID string) bool) (Candidate, bool) {
	if len(cands) == 0 {
		return Candidate{}, false
	}
	now := b.now()
	var abuf [stackCands]*agent
	var wbuf [stackCands]float64
	agents := b.lookup(abuf[:0], cands)
	ws := wbuf[:0]
	if len(cands) > stackCands {
		ws = make([]float64, 0, len(cands))
	}
	ws, n, last := b.weights(ws, cands, agents, skip, now)
	switch {
	case n == 0:
		return Candidate{}, false
	case n == 1:
		return cands[last], true
	}
	total := 0.0
	for _, w := range ws {
		total += w
	}
	if math.IsInf(total, 1) { // absurd weights; scale them down rather than draw from +Inf
		total = 0
		for i, w := range ws {
			if w > 0 {
				ws[i] = max(w*0x1p-64, math.SmallestNonzeroFloat64)
				total += ws[i]
			}
		}
	}
	first := draw(ws, total, -1, b.cfg.Rand())
	if b.cfg.Static {
		return cands[first], true
	}
	inFirst := agents[first].inFlight()
	if inFirst == 0 {
		return cands[first], true
	}
	rest := total - ws[first]
	if !(rest > 0) {
		return cands[first], true
	}
	second := draw(ws, rest, first, b.cfg.Rand())
	if second < 0 {
		return cands[first], true
	}
	if float64(agents[second].inFlight()+1)/ws[second] < float64(inFirst+1)/ws[first] {
		return cands[second], true
	}
	return cands[first], true
}

// weights appends each candidate's effective weight (0: not eligible) to ws, and returns the
// number of eligible candidates and the index of the last one. It fires OnReadmit for agents
// whose ejection it finds over.
func (b *Balancer) weights(ws []float64, cands []Candidate, agents []*agent, skip func(string) bool, now int64) ([]float64, int, int) {
	n, last := 0, -1
	best := math.Inf(1)
	for i := range cands {
		c, a := &cands[i], agents[i]
		if !validWeight(c.Weight) || (skip != nil && skip(c.AgentID)) {
			ws = append(ws, 0)
			continue
		}
		if a != nil {
			until := a.until.Load()
			if until != 0 && now < until {
				ws = append(ws, 0)
				continue
			}
			b.noticeReadmit(a, c, now)
			if !b.cfg.Static {
				if l := a.latencyAvg(); l > 0 && l < best {
					best = l
				}
			}
		}
		ws = append(ws, 1) // marks eligible; replaced below
		n++
		last = i
	}
	for i := range ws {
		if ws[i] == 0 {
			continue
		}
		c, a := &cands[i], agents[i]
		var w float64
		if b.cfg.Static {
			w = c.Weight * b.ramp(a, now)
		} else {
			w = c.Weight * b.factors(c, a, now, best).Score()
		}
		// A tiny weight times small factors can underflow; it is still eligible.
		ws[i] = math.Max(w, math.SmallestNonzeroFloat64)
	}
	return ws, n, last
}

// draw returns the index chosen with probability ∝ ws[i] among those other than except, with
// total the sum of their weights and r uniform in [0,1). Rounding can leave r·total past the last
// cumulative sum; the last eligible index is the answer then. -1 when none is eligible.
func draw(ws []float64, total float64, except int, r float64) int {
	x := r * total
	chosen := -1
	for i, w := range ws {
		if i == except || w <= 0 {
			continue
		}
		chosen = i
		if x < w {
			return i
		}
		x -= w
	}
	return chosen
}

func validWeight(w float64) bool { return w > 0 && !math.IsInf(w, 1) }

// InFlight is the number of calls begun on agentID and not yet ended.
func (b *Balancer) InFlight(agentID string) int64 {
	b.mu.RLock()
	a := b.agents[agentID]
	b.mu.RUnlock()
	return a.inFlight()
}

// Forget drops the state of agentID (a deregistered agent).
func (b *Balancer) Forget(agentID string) {
	b.mu.Lock()
	delete(b.agents, agentID)
	b.mu.Unlock()
}

// acquire returns agentID's state, created when missing, with one more call in flight. The
// count is raised under the map lock so that a concurrent sweep cannot drop the state between
// the lookup and the increment.
func (b *Balancer) acquire(c *Candidate, now int64) *agent {
	b.mu.RLock()
	a := b.agents[c.AgentID]
	if a != nil {
		a.inflight.Add(1)
		a.lastUsed.Store(now)
	}
	b.mu.RUnlock()
	if a != nil {
		return a
	}
	b.mu.Lock()
	a = b.agents[c.AgentID]
	if a == nil {
		a = &agent{}
		b.agents[c.AgentID] = a
	}
	a.inflight.Add(1)
	a.lastUsed.Store(now)
	b.mu.Unlock()
	return a
}

// maybeSweep drops idle agents' state at most once per sweepEvery.
func (b *Balancer) maybeSweep(now int64) {
	next := b.nextSweep.Load()
	if now < next || !b.nextSweep.CompareAndSwap(next, now+int64(sweepEvery)) {
		return
	}
	idle := now - int64(idleEvict)
	rampUp := int64(b.cfg.RampUp)
	b.mu.Lock()
	defer b.mu.Unlock()
	for id, a := range b.agents {
		if a.lastUsed.Load() > idle || a.inflight.Load() != 0 {
			continue
		}
		if until := a.until.Load(); until != 0 && now < until+rampUp {
			continue // ejected or ramping: forgetting would let it straight back in
		}
		delete(b.agents, id)
	}
}
