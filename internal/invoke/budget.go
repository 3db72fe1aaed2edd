package invoke

import (
	"sync"
	"time"
)

// RetryBudget bounds the extra attempts (retries and hedges) to a ratio of first attempts over a
// sliding window, so that an outage of every agent cannot multiply the load on them: with Ratio
// 0.1 at most one extra attempt per ten calls, plus MinPerSecond extra attempts per second so that
// a quiet system can still retry. This is the token-bucket retry budget of Finagle and gRPC's
// retry throttling; failsafe-go's budget bounds concurrent retries instead, which does not bound
// the total.
type RetryBudget struct {
	Ratio        float64       // extra attempts allowed per first attempt; default 0.1
	MinPerSecond float64       // extra attempts allowed per second regardless of traffic; default 1
	Window       time.Duration // how long a deposit counts; default 10 s
}

func (b RetryBudget) withDefaults() RetryBudget {
	if b.Ratio <= 0 {
		b.Ratio = 0.1
	}
	if b.MinPerSecond < 0 {
		b.MinPerSecond = 0
	} else if b.MinPerSecond == 0 {
		b.MinPerSecond = 1
	}
	if b.Window <= 0 {
		b.Window = 10 * time.Second
	}
	return b
}

// budget keeps the deposits (first attempts) and withdrawals (extra attempts) of the last Window
// in one-second buckets. It is safe for concurrent use.
type budget struct {
	cfg RetryBudget
	now func() time.Time

	mu      sync.Mutex
	buckets []budgetBucket // ring, one per second of the window
}

type budgetBucket struct {
	sec          int64 // unix second this bucket counts; stale buckets are reset on use
	firsts, more float64
}

func newBudget(cfg RetryBudget, now func() time.Time) *budget {
	cfg = cfg.withDefaults()
	n := max(int(cfg.Window/time.Second), 1)
	return &budget{cfg: cfg, now: now, buckets: make([]budgetBucket, n)}
}

// bucket returns the bucket of second sec, reset if it held an older second. Caller holds mu.
func (b *budget) bucket(sec int64) *budgetBucket {
	bk := &b.buckets[int(sec%int64(len(b.buckets)))]
	if bk.sec != sec {
		*bk = budgetBucket{sec: sec}
	}
	return bk
}

// deposit records a first attempt.
func (b *budget) deposit() {
	sec := b.now().Unix()
	b.mu.Lock()
	b.bucket(sec).firsts++
	b.mu.Unlock()
}

// withdraw reports whether one more extra attempt fits the budget, and records it if so.
func (b *budget) withdraw() bool {
	sec := b.now().Unix()
	b.mu.Lock()
	defer b.mu.Unlock()
	var firsts, more float64
	oldest := sec - int64(len(b.buckets)) + 1
	for i := range b.buckets {
		if bk := b.buckets[i]; bk.sec >= oldest && bk.sec <= sec {
			firsts += bk.firsts
			more += bk.more
		}
	}
	allowed := b.cfg.Ratio*firsts + b.cfg.MinPerSecond*float64(len(b.buckets))
	if more+1 > allowed {
		return false
	}
	b.bucket(sec).more++
	return true
}
