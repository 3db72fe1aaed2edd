package idempotency

import (
	"context"
	"log/slog"
	"time"
)

// DefaultPurgeInterval is how often RunPurger deletes expired records unless told otherwise.
const DefaultPurgeInterval = 5 * time.Minute

// PurgeOptions configure RunPurger; the zero value works.
type PurgeOptions struct {
	Interval time.Duration    // between purges; zero: DefaultPurgeInterval
	Logger   *slog.Logger     // failed purges; nil: discarded
	Now      func() time.Time // the clock; nil: time.Now
}

// RunPurger deletes the expired records of s (PurgeIdempotencyKeys) once at start and then every
// interval, until ctx ends; it then returns nil. A failed purge is logged and tried again at the
// next tick: expired records are ignored by the store meanwhile, so a late purge only costs space.
func RunPurger(ctx context.Context, s Store, opts PurgeOptions) error {
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
		n, err := s.PurgeIdempotencyKeys(ctx, opts.Now().UTC())
		switch {
		case err != nil && ctx.Err() == nil:
			opts.Logger.ErrorContext(ctx, "purge expired idempotency keys", "error", err)
		case n > 0:
			opts.Logger.DebugContext(ctx, "purged expired idempotency keys", "count", n)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}
