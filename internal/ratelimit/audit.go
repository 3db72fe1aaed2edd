package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// Recorder writes the audit record of rate-limit blocks; internal/control's RecordBlock
// appends a denied "ratelimit.block" record. ctx carries the values of the first blocked request
// of the window (its request id, address and principal) but not its cancellation.
type Recorder interface {
	RecordBlock(ctx context.Context, tenant, key, rule, reason string)
}

// Defaults of AuditorOptions.
const (
	DefaultAuditQueue        = 1024
	DefaultAuditMaxKeys      = 100_000
	DefaultAuditFlushTimeout = 5 * time.Second
)

// AuditorOptions are BlockAuditor's optional settings; the zero value works.
type AuditorOptions struct {
	QueueSize     int           // records waiting for Run; 0: DefaultAuditQueue
	MaxKeys       int           // keys whose current window is remembered; 0: DefaultAuditMaxKeys
	FlushTimeout  time.Duration // bound on each record and on the final drain; 0: DefaultAuditFlushTimeout
	Logger        *slog.Logger
	MeterProvider metric.MeterProvider
	// Claim, when set, is asked before each record whether this replica is the first to record
	// the window (name identifies key and window; ttl is how long the claim must last). A false
	// answer skips the record; an error records anyway (a duplicate beats a lost record). The
	// Limiter sets it to a Redis SET NX when it has Redis, so replicas record a window once.
	Claim func(ctx context.Context, name string, ttl time.Duration) (bool, error)
}

// BlockAuditor turns a flood of blocks into at most one audit record per key and window: the
// first block of a key in window floor(now/Period) is queued for the Recorder, later blocks of
// that window are only counted, and the count reaches the audit trail in the reason of the next
// window's record ("…; 523 blocked in the previous window"). See the package doc for the bound.
//
// Block never waits: it takes a mutex held for a map update and sends on a buffered channel,
// dropping the record (and counting nops_ratelimit_audit_dropped_total) when the queue is full.
// Run writes the queued records; Close stops it after draining.
//
// Concurrency: Block and Close are safe for concurrent use; Run runs at most once.
type BlockAuditor struct {
	rec  Recorder
	opts AuditorOptions

	mu        sync.Mutex // guards seen and nextSweep; never held during I/O
	seen      map[string]seenWindow
	nextSweep int64 // Unix ns before which a full map is not swept again

	queue     chan auditItem
	dropped   metric.Int64Counter
	quit      chan struct{}
	closeOnce sync.Once
	started   atomic.Bool
	done      chan struct{}
}

// seenWindow is what the auditor remembers of a key: its latest blocked window and the blocks
// counted in it.
type seenWindow struct {
	period int64 // ns
	window int64
	count  int64
}

type auditItem struct {
	ctx                      context.Context
	tenant, key, rule, claim string
	reason                   string
	ttl                      time.Duration
}

// NewBlockAuditor returns an auditor writing to rec; with a nil rec, Block does nothing.
func NewBlockAuditor(rec Recorder, opts AuditorOptions) (*BlockAuditor, error) {
	if opts.QueueSize <= 0 {
		opts.QueueSize = DefaultAuditQueue
	}
	if opts.MaxKeys <= 0 {
		opts.MaxKeys = DefaultAuditMaxKeys
	}
	if opts.FlushTimeout <= 0 {
		opts.FlushTimeout = DefaultAuditFlushTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MeterProvider == nil {
		opts.MeterProvider = noop.NewMeterProvider()
	}
	dropped, err := opts.MeterProvider.Meter(meterName).Int64Counter("nops_ratelimit_audit_dropped_total",
		metric.WithDescription("Rate-limit block records not written: the queue was full, or too many keys were blocked in one window to remember."))
	if err != nil {
		return nil, fmt.Errorf("rate limit audit metrics: %w", err)
	}
	return &BlockAuditor{
		rec: rec, opts: opts, seen: map[string]seenWindow{},
		queue: make(chan auditItem, opts.QueueSize), dropped: dropped,
		quit: make(chan struct{}), done: make(chan struct{}),
	}, nil
}

var (
	droppedQueue = metric.WithAttributeSet(attribute.NewSet(attribute.String("reason", "queue_full")))
	droppedKeys  = metric.WithAttributeSet(attribute.NewSet(attribute.String("reason", "too_many_keys")))
)

// Block notes that a request was refused by rule on key at now, and queues the window's record
// if it is the first block of the window. tenant is the audit tree ("" for the global one).
func (a *BlockAuditor) Block(ctx context.Context, tenant, key string, rule Rule, now time.Time) {
	if a == nil || a.rec == nil || !rule.Enabled() {
		return
	}
	period, n := rule.Period.Nanoseconds(), now.UnixNano()
	window := n / period
	a.mu.Lock()
	st, ok := a.seen[key]
	if ok && st.period == period && st.window == window {
		st.count++
		a.seen[key] = st
		a.mu.Unlock()
		return
	}
	prev := int64(-1) // unknown
	if ok && st.period == period && st.window == window-1 {
		prev = st.count
	}
	if !ok && len(a.seen) >= a.opts.MaxKeys {
		if n >= a.nextSweep {
			a.sweep(n)
			a.nextSweep = n + int64(time.Second)
		}
		if len(a.seen) >= a.opts.MaxKeys {
			a.mu.Unlock()
			a.dropped.Add(ctx, 1, droppedKeys)
			return
		}
	}
	a.seen[key] = seenWindow{period: period, window: window, count: 1}
	a.mu.Unlock()

	reason := fmt.Sprintf("rate limit %s %s %s exceeded", key, rule.Name, rule)
	if prev >= 0 {
		reason += fmt.Sprintf("; %d blocked in the previous window", prev)
	}
	it := auditItem{
		ctx: context.WithoutCancel(ctx), tenant: tenant, key: key, rule: rule.Name, reason: reason,
		claim: key + "@" + strconv.FormatInt(window, 10) + "/" + strconv.FormatInt(rule.Period.Milliseconds(), 10),
		ttl:   2 * rule.Period,
	}
	select {
	case a.queue <- it:
	default:
		a.dropped.Add(ctx, 1, droppedQueue)
	}
}

// sweep forgets keys whose window and the next one are over: nothing more can be said of them.
// a.mu is held.
func (a *BlockAuditor) sweep(now int64) {
	for k, st := range a.seen {
		if (st.window+2)*st.period <= now {
			delete(a.seen, k)
		}
	}
}

// Keys returns how many keys the auditor remembers.
func (a *BlockAuditor) Keys() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.seen)
}

// Run writes queued records until ctx ends or Close is called, then drains the queue (each
// record bounded by FlushTimeout) and returns nil.
func (a *BlockAuditor) Run(ctx context.Context) error {
	if !a.started.CompareAndSwap(false, true) {
		return errors.New("rate limit auditor: Run called twice")
	}
	defer close(a.done)
	for {
		select {
		case <-ctx.Done():
			a.drain()
			return nil
		case <-a.quit:
			a.drain()
			return nil
		case it := <-a.queue:
			a.write(it)
		}
	}
}

// Close stops Run and waits for it to drain the queue; without a running Run it drains the
// queue itself. It may be called more than once.
func (a *BlockAuditor) Close() error {
	a.closeOnce.Do(func() { close(a.quit) })
	if a.started.Load() {
		<-a.done
		return nil
	}
	a.drain()
	return nil
}

func (a *BlockAuditor) drain() {
	deadline := time.Now().Add(a.opts.FlushTimeout)
	for time.Now().Before(deadline) {
		select {
		case it := <-a.queue:
			a.write(it)
		default:
			return
		}
	}
}

func (a *BlockAuditor) write(it auditItem) {
	ctx, cancel := context.WithTimeout(it.ctx, a.opts.FlushTimeout)
	defer cancel()
	if a.opts.Claim != nil {
		first, err := a.opts.Claim(ctx, it.claim, it.ttl)
		if err != nil {
			a.opts.Logger.WarnContext(ctx, "rate limit audit claim failed; recording anyway", "key", it.key, "error", err)
		} else if !first {
			return
		}
	}
	a.rec.RecordBlock(ctx, it.tenant, it.key, it.rule, it.reason)
}
