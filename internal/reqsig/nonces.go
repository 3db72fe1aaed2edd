package reqsig

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// MemoryNonces is a NonceStore in the process's memory: nothing survives a restart and replicas
// do not share it, so it is for tests, benchmarks and single-process tools, not for a kernel
// (a replay would pass after a restart or on another replica). Dead records are dropped as new
// ones arrive. The zero value is ready to use and safe for concurrent use.
type MemoryNonces struct {
	mu     sync.Mutex
	live   map[memNonce]time.Time // → expiresAt
	claims int
}

type memNonce struct{ keyID, nonce string }

// sweepEvery is how many claims pass between two sweeps of dead records.
const sweepEvery = 1024

var _ NonceStore = (*MemoryNonces)(nil)

// ClaimNonce records nonce for keyID unless a live record exists (see NonceStore).
func (m *MemoryNonces) ClaimNonce(_ context.Context, keyID, nonce string, expiresAt, now time.Time) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.live == nil {
		m.live = map[memNonce]time.Time{}
	}
	m.claims++
	if m.claims%sweepEvery == 0 {
		for k, until := range m.live {
			if !until.After(now) {
				delete(m.live, k)
			}
		}
	}
	k := memNonce{keyID, nonce}
	if until, ok := m.live[k]; ok && until.After(now) {
		return false, nil
	}
	m.live[k] = expiresAt
	return true, nil
}

// DefaultPurgeInterval is how often RunNoncePurger purges unless told otherwise.
const DefaultPurgeInterval = time.Minute

// PurgeOptions configure RunNoncePurger; the zero value works.
type PurgeOptions struct {
	Interval time.Duration    // between purges; 0: DefaultPurgeInterval
	Logger   *slog.Logger     // failed purges; nil: discard
	Now      func() time.Time // nil: time.Now
}

// RunNoncePurger deletes the dead nonce records of p once at start and then every interval,
// until ctx ends; it then returns nil. A failed purge is logged and retried at the next tick:
// dead records are ignored by ClaimNonce meanwhile, so a late purge only costs space.
func RunNoncePurger(ctx context.Context, p NoncePurger, opts PurgeOptions) error {
	if opts.Interval <= 0 {
		opts.Interval = DefaultPurgeInterval
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	tick := time.NewTicker(opts.Interval)
	defer tick.Stop()
	for {
		n, err := p.PurgeNonces(ctx, opts.Now().UTC())
		switch {
		case err != nil && ctx.Err() == nil:
			opts.Logger.ErrorContext(ctx, "purge request nonces", "error", err)
		case n > 0:
			opts.Logger.DebugContext(ctx, "purged request nonces", "count", n)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}
