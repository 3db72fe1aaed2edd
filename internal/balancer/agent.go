package balancer

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// agent is the kernel's knowledge of one agent. Pick reads the atomics without a lock; End
// updates them under mu, so writers are serialised and readers see each value whole.
type agent struct {
	inflight atomic.Int64
	lastUsed atomic.Int64  // last Begin or End, ns since the epoch
	until    atomic.Int64  // end of the last ejection, ns since the epoch; 0: never ejected
	latency  atomic.Uint64 // float64 bits of the latency average in ns; 0: no samples
	errRate  atomic.Uint64 // float64 bits of the failure average

	mu          sync.Mutex  // guards the fields below and the writes of until, latency, errRate
	latSum      float64     // decayed sum of latency samples (ns)
	errSum      float64     // decayed sum of failures (1 each)
	weight      float64     // decayed number of samples; both averages divide by it
	lastSample  int64       // time of the last sample, ns since the epoch
	consecutive int         // failures since the last success or ejection
	ejections   int         // ejections since the last complete ramp: the doubling exponent
	pending     atomic.Bool // ejected and OnReadmit not yet called; written under mu
}

func (a *agent) inFlight() int64 {
	if a == nil {
		return 0
	}
	return a.inflight.Load()
}

func (a *agent) latencyAvg() float64 { return math.Float64frombits(a.latency.Load()) }
func (a *agent) errorAvg() float64   { return math.Float64frombits(a.errRate.Load()) }

// event is what record decided; the caller fires the hooks after releasing the lock.
type event struct {
	readmitted bool
	ejected    bool
	until      int64
}

// record adds the outcome of a call begun at start and ended at now, and ejects the agent when
// the rules say so (see the package doc).
func (a *agent) record(cfg *Config, start, now int64, latency time.Duration, failure bool) event {
	var ev event
	a.mu.Lock()
	defer a.mu.Unlock()

	ev.readmitted = a.readmitLocked(now)
	if a.weight > 0 && now > a.lastSample {
		f := math.Exp2(-float64(now-a.lastSample) / float64(cfg.HalfLife))
		a.latSum *= f
		a.errSum *= f
		a.weight *= f
		if a.weight < 1e-9 { // the old evidence is nothing now; drop it before it underflows
			a.latSum, a.errSum, a.weight = 0, 0, 0
		}
	}
	a.lastSample = max(a.lastSample, now)
	sample := max(float64(latency), minLatency)
	if failure {
		if a.weight > 0 {
			sample = max(sample, a.latSum/a.weight)
		}
		a.errSum++
	}
	a.latSum += sample
	a.weight++
	a.latency.Store(math.Float64bits(a.latSum / a.weight))
	a.errRate.Store(math.Float64bits(a.errSum / a.weight))

	if !failure {
		a.consecutive = 0
		return ev
	}
	until := a.until.Load()
	if cfg.EjectAfter < 0 || (until != 0 && start < until) {
		// Begun before the last ejection ended: it failed with the ones that caused it.
		return ev
	}
	rampEnd := until + int64(cfg.RampUp)
	inRamp := until != 0 && now < rampEnd
	a.consecutive++
	if !inRamp && a.consecutive < cfg.EjectAfter {
		return ev
	}
	if until != 0 && now >= rampEnd {
		a.ejections = 0 // the previous re-admission completed without a failure
	}
	d := cfg.EjectBase
	for i := 0; i < a.ejections && d < cfg.EjectMax; i++ {
		d *= 2
	}
	d = min(d, cfg.EjectMax)
	a.ejections++
	a.consecutive = 0
	a.pending.Store(true)
	ev.ejected, ev.until = true, now+int64(d)
	a.until.Store(ev.until)
	return ev
}

// readmitLocked reports, once per ejection, that the ejection is over. a.mu is held.
func (a *agent) readmitLocked(now int64) bool {
	if !a.pending.Load() || now < a.until.Load() {
		return false
	}
	a.pending.Store(false)
	return true
}

// noticeReadmit fires OnReadmit when a's ejection is over and nobody has said so yet. The
// lock-free test keeps Pick cheap; the locked one decides.
func (b *Balancer) noticeReadmit(a *agent, c *Candidate, now int64) {
	if b.cfg.OnReadmit == nil || !a.pending.Load() || now < a.until.Load() {
		return
	}
	a.mu.Lock()
	ok := a.readmitLocked(now)
	a.mu.Unlock()
	if ok {
		b.cfg.OnReadmit(*c)
	}
}

// ramp is the ramp factor of a (nil: never seen) at now.
func (b *Balancer) ramp(a *agent, now int64) float64 {
	if a == nil {
		return 1
	}
	until := a.until.Load()
	switch {
	case until == 0:
		return 1
	case now < until:
		return 0
	}
	since := now - until
	if since >= int64(b.cfg.RampUp) {
		return 1
	}
	return rampStart + (1-rampStart)*float64(since)/float64(b.cfg.RampUp)
}

// Factors are the parts of a candidate's score (see the package doc).
type Factors struct {
	Freshness float64
	Latency   float64
	Success   float64
	Load      float64
	Ramp      float64
}

// Score is the product of the factors: 0 while ejected, else in (0,1].
func (f Factors) Score() float64 { return f.Freshness * f.Latency * f.Success * f.Load * f.Ramp }

// factors computes c's factors; best is the lowest latency average among the Pick's eligible
// candidates (+Inf when none has samples).
func (b *Balancer) factors(c *Candidate, a *agent, now int64, best float64) Factors {
	floor := b.cfg.MinFactor
	f := Factors{Freshness: 1, Latency: 1, Success: 1, Load: 1, Ramp: b.ramp(a, now)}
	if c.Stale {
		f.Freshness = b.cfg.StaleFactor
	}
	errRate := 0.0
	if a != nil {
		if l := a.latencyAvg(); l > 0 && l > best {
			f.Latency = max(best/l, floor)
		}
		errRate = a.errorAvg()
	}
	if r := c.Reported.ErrorRate; r != nil && *r > errRate { // NaN compares false
		errRate = min(*r, 1)
	}
	f.Success = max(1-errRate, floor)
	if fc := c.Reported.FreeCapacity; fc != nil && *fc == 0 {
		f.Load = floor
	}
	return f
}

// Scores returns the factors each candidate would get in a Pick now (all 1 but Ramp in static
// mode; Ramp 0 for an ejected agent). For metrics and debugging; it changes no state.
func (b *Balancer) Scores(cands []Candidate) []Factors {
	now := b.now()
	agents := b.lookup(make([]*agent, 0, len(cands)), cands)
	best := math.Inf(1)
	for i, a := range agents {
		if a == nil || !validWeight(cands[i].Weight) || b.ramp(a, now) == 0 {
			continue
		}
		if l := a.latencyAvg(); l > 0 && l < best {
			best = l
		}
	}
	out := make([]Factors, len(cands))
	for i := range cands {
		if b.cfg.Static {
			out[i] = Factors{Freshness: 1, Latency: 1, Success: 1, Load: 1, Ramp: b.ramp(agents[i], now)}
			continue
		}
		out[i] = b.factors(&cands[i], agents[i], now, best)
	}
	return out
}

// State is a snapshot of the kernel's observations of one agent.
type State struct {
	Known               bool          // the balancer has state for it (it was begun on, and not forgotten)
	InFlight            int64         // calls begun and not ended
	Latency             time.Duration // latency average; 0 without samples
	ErrorRate           float64       // failure average, 0..1
	ConsecutiveFailures int           // counted towards the next ejection
	Ejections           int           // ejections since the last complete ramp (the doubling exponent)
	Ejected             bool          // now before EjectedUntil
	EjectedUntil        time.Time     // end of the last ejection; zero when never ejected
	Ramp                float64       // ramp factor now: 0 ejected, 0.1..1 re-admitting, 1 otherwise
}

// State returns what the balancer knows about agentID.
func (b *Balancer) State(agentID string) State {
	b.mu.RLock()
	a := b.agents[agentID]
	b.mu.RUnlock()
	if a == nil {
		return State{Ramp: 1}
	}
	now := b.now()
	a.mu.Lock()
	s := State{
		Known:               true,
		InFlight:            a.inflight.Load(),
		Latency:             time.Duration(a.latencyAvg()),
		ErrorRate:           a.errorAvg(),
		ConsecutiveFailures: a.consecutive,
		Ejections:           a.ejections,
	}
	until := a.until.Load()
	a.mu.Unlock()
	if until != 0 {
		s.EjectedUntil = b.wall(until)
		s.Ejected = now < until
		if now >= until+int64(b.cfg.RampUp) {
			s.Ejections = 0 // record resets it lazily, at the next ejection
		}
	}
	s.Ramp = b.ramp(a, now)
	return s
}
