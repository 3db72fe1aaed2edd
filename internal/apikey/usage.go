package apikey

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of UsageOptions.
const (
	DefaultUsageInterval     = 30 * time.Second
	DefaultUsageBatchSize    = 500
	DefaultUsageFlushTimeout = 5 * time.Second
)

// UsageOptions are UsageRecorder's optional settings; the zero value works.
type UsageOptions struct {
	Interval     time.Duration // time between flushes; 0: DefaultUsageInterval
	BatchSize    int           // pending keys that trigger a flush, and most keys per store call; 0: DefaultUsageBatchSize
	FlushTimeout time.Duration // bound on the final flush when Run stops; 0: DefaultUsageFlushTimeout
	Logger       *slog.Logger  // nil: discard
	// NewTicker returns the channel that paces flushes and a function stopping it; nil: a
	// time.Ticker. Tests pass their own channel to flush on demand.
	NewTicker func(d time.Duration) (tick <-chan time.Time, stop func())
}

// UsageRecorder keeps the latest use of each key in memory and writes them to a UsageStore in
// batches: every Interval, as soon as BatchSize keys are pending, on Flush, and once more when Run
// stops or Close is called. Many uses of one key between two flushes become one write of the
// latest time. A failed flush keeps its uses pending for the next one (a newer use of the same
// key wins); while flushes fail, only the ticker retries, so a store outage is not hammered on
// every request. Uses recorded after the final flush stay in memory until Flush is called.
//
// Concurrency: Record, Flush, Pending and Close are safe for concurrent use. Run runs at most once.
type UsageRecorder struct {
	store UsageStore
	opts  UsageOptions

	mu      sync.Mutex // guards pending; never held during I/O
	pending map[string]time.Time
	flushMu sync.Mutex // serialises flushes, so requeued uses never race a newer batch
	failing atomic.Bool

	full      chan struct{} // capacity 1: "a batch is ready", coalesced
	quit      chan struct{}
	closeOnce sync.Once
	started   atomic.Bool
	done      chan struct{} // closed when Run returns; runErr is set before
	runErr    error
}

var _ UsageSink = (*UsageRecorder)(nil)

// NewUsageRecorder returns a recorder writing to store. Start its loop with Run.
func NewUsageRecorder(store UsageStore, opts UsageOptions) *UsageRecorder {
	if opts.Interval <= 0 {
		opts.Interval = DefaultUsageInterval
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = DefaultUsageBatchSize
	}
	if opts.FlushTimeout <= 0 {
		opts.FlushTimeout = DefaultUsageFlushTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.NewTicker == nil {
		opts.NewTicker = func(d time.Duration) (<-chan time.Time, func()) {
			t := time.NewTicker(d)
			return t.C, t.Stop
		}
	}
	return &UsageRecorder{
		store: store, opts: opts, pending: map[string]time.Time{},
		full: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{}),
	}
}

// Record notes that key id was used at at. It never blocks on I/O.
func (r *UsageRecorder) Record(id string, at time.Time) {
	r.mu.Lock()
	if cur, ok := r.pending[id]; !ok || at.After(cur) {
		r.pending[id] = at
	}
	n := len(r.pending)
	r.mu.Unlock()
	if n >= r.opts.BatchSize && !r.failing.Load() {
		select {
		case r.full <- struct{}{}:
		default: // a flush is already asked for
		}
	}
}

// Pending returns how many keys have a use not yet written.
func (r *UsageRecorder) Pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pending)
}

// Flush writes every pending use now, in calls of at most BatchSize keys in ascending ID order.
// On failure the uses not written stay pending.
func (r *UsageRecorder) Flush(ctx context.Context) error {
	r.flushMu.Lock()
	defer r.flushMu.Unlock()
	r.mu.Lock()
	batch := r.pending
	r.pending = make(map[string]time.Time, len(batch))
	r.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	uses := make([]Use, 0, len(batch))
	for id, at := range batch {
		uses = append(uses, Use{ID: id, At: at})
	}
	slices.SortFunc(uses, func(a, b Use) int { return cmp.Compare(a.ID, b.ID) })
	for start := 0; start < len(uses); start += r.opts.BatchSize {
		chunk := uses[start:min(start+r.opts.BatchSize, len(uses))]
		if err := r.store.TouchAPIKeys(ctx, chunk); err != nil {
			r.failing.Store(true)
			r.requeue(uses[start:])
			return fmt.Errorf("record api key usage of %d keys: %w", len(uses)-start, err)
		}
	}
	r.failing.Store(false)
	return nil
}

// requeue puts back uses that were not written, unless a newer use arrived meanwhile.
func (r *UsageRecorder) requeue(uses []Use) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, u := range uses {
		if cur, ok := r.pending[u.ID]; !ok || u.At.After(cur) {
			r.pending[u.ID] = u.At
		}
	}
}

// Run flushes on every tick and whenever a batch is full, until ctx ends or Close is called;
// then it flushes once more, bounded by FlushTimeout even though ctx has ended, and returns that
// flush's error. Errors of the periodic flushes are logged, not returned.
func (r *UsageRecorder) Run(ctx context.Context) error {
	if !r.started.CompareAndSwap(false, true) {
		return errors.New("usage recorder: Run called twice")
	}
	defer close(r.done)
	tick, stop := r.opts.NewTicker(r.opts.Interval)
	defer stop()
	for {
		select {
		case <-ctx.Done():
			r.runErr = r.finalFlush(ctx)
			return r.runErr
		case <-r.quit:
			r.runErr = r.finalFlush(ctx)
			return r.runErr
		case <-tick:
			r.flushLogged(ctx)
		case <-r.full:
			r.flushLogged(ctx)
		}
	}
}

func (r *UsageRecorder) flushLogged(ctx context.Context) {
	if err := r.Flush(ctx); err != nil {
		r.opts.Logger.WarnContext(ctx, "api key usage flush failed; retrying on the next tick", "error", err, "pending", r.Pending())
	}
}

func (r *UsageRecorder) finalFlush(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.opts.FlushTimeout)
	defer cancel()
	return r.Flush(ctx)
}

// Close stops Run, waits for its final flush and returns that flush's error. Without a running
// Run it flushes itself. Close may be called more than once.
func (r *UsageRecorder) Close() error {
	r.closeOnce.Do(func() { close(r.quit) })
	if r.started.Load() {
		<-r.done
		return r.runErr
	}
	return r.finalFlush(context.Background())
}
