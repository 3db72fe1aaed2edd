package billing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"runtime"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/events"
)

// Sources of a Usage (events.BillingUsage's source).
const (
	SourceGateway    = events.UsageSourceGateway
	SourceInvocation = events.UsageSourceInvocation
)

// Defaults of Options.
const (
	DefaultBatch          = 256
	DefaultInterval       = 50 * time.Millisecond
	DefaultQueue          = 10000
	DefaultFlushTimeout   = 5 * time.Second
	DefaultBackoffInitial = 100 * time.Millisecond
	DefaultBackoffMax     = 5 * time.Second
)

// attemptTimeout bounds one batch transaction while Run's context lives, so a hung database
// connection fails the attempt (and it is retried) instead of stopping the recorder.
const attemptTimeout = 30 * time.Second

// dropLogEvery is how often dropped records are logged at most; the counter has every one.
const dropLogEvery = 10 * time.Second

// Reasons of nops_billing_usage_dropped_total.
const (
	ReasonQueueFull = "queue_full" // Record found the queue full
	ReasonInvalid   = "invalid"    // Record was given a usage that is not a valid event
	ReasonStopped   = "stopped"    // Record was called after Run's context ended
	ReasonShutdown  = "shutdown"   // queued, but not written within FlushTimeout at shutdown
)

// Store is what the Recorder needs of a storage adapter: transactions and the outbox's write
// side. Both internal/store/sqlite and internal/store/postgres satisfy it.
type Store interface {
	// InTx runs fn in one transaction; store methods called with the ctx fn receives join it.
	InTx(ctx context.Context, fn func(ctx context.Context) error) error
	events.OutboxWriter
}

// Usage is one metered call, as the gateway or the invoke path reports it. It becomes the
// payload events.BillingUsage; see that type and api/events/nops.billing.usage.v1.json for the
// rules each field follows. It holds no header, body, credential or client address.
type Usage struct {
	Tenant        string        // the tenant billed; required
	AgentID       string        // the calling (gateway) or called (invocation) agent; optional
	Source        string        // SourceGateway | SourceInvocation; required
	Route         string        // matched route pattern, "POST /v1/agents/{agent_id}/heartbeat"; required for the gateway
	Capability    string        // the invoked capability; required for an invocation
	RequestID     string        // the request id the call was served under; optional
	Status        int           // the HTTP status answered, 100..599
	RequestBytes  int64         // body bytes read from the caller, ≥ 0
	ResponseBytes int64         // body bytes written to the caller, ≥ 0
	StartedAt     time.Time     // when the call was accepted; any zone, written in UTC
	Duration      time.Duration // from StartedAt to the last byte written, ≥ 0
	// TraceParent is the W3C traceparent of the call's span, or "": the event then joins the
	// call's trace.
	TraceParent string
}

// Payload returns the event payload of u (StartedAt in UTC, Duration in milliseconds).
func (u Usage) Payload() events.BillingUsage {
	return events.BillingUsage{
		Tenant: u.Tenant, AgentID: u.AgentID, Source: u.Source, Route: u.Route,
		Capability: u.Capability, RequestID: u.RequestID, Status: u.Status,
		RequestBytes: u.RequestBytes, ResponseBytes: u.ResponseBytes,
		DurationMs: float64(u.Duration) / float64(time.Millisecond),
		StartedAt:  u.StartedAt.UTC(),
	}
}

// Event returns the event of u: type nops.billing.usage.v1, subject events.UsageSubject(Tenant),
// time StartedAt + Duration, a fresh id. An invalid usage is an errs.Invalid naming the field.
func (u Usage) Event() (events.Event, error) {
	p := u.Payload()
	return events.New(events.TypeBillingUsage, p.Tenant, p.EventSubject(), p, p.StartedAt.Add(u.Duration), u.TraceParent)
}

// Record returns the outbox record of u's event (see Event), built with events.NewRecord.
func (u Usage) Record() (events.OutboxRecord, error) {
	p := u.Payload()
	return events.NewRecord(events.TypeBillingUsage, p.Tenant, p.EventSubject(), p, p.StartedAt.Add(u.Duration), u.TraceParent)
}

// Options tune a Recorder. Zero fields take the defaults; negative ones are an errs.Invalid.
type Options struct {
	// Batch is the most records one transaction writes. Default 256.
	Batch int
	// Interval is the longest a record waits for its batch to fill before the batch is written.
	// Default 50 ms.
	Interval time.Duration
	// Queue is how many records wait for Run at most; Record drops beyond it. Default 10000.
	Queue int
	// FlushTimeout bounds the writing of what is queued once Run's context ends. Default 5 s.
	FlushTimeout time.Duration
	// BackoffInitial and BackoffMax pace the retries of a failed batch. Defaults 100 ms and 5 s.
	BackoffInitial time.Duration
	BackoffMax     time.Duration
	// Logger receives failures and drops. Default: discard.
	Logger *slog.Logger
	// Meter records the metrics of the package documentation. Default: none.
	Meter metric.Meter
	// Enqueued is called after each committed batch, from Run's goroutine; the kernel passes the
	// outbox relay's Notify. It must not block. Default: nothing.
	Enqueued func()
}

func (o Options) withDefaults() (Options, error) {
	switch {
	case o.Batch < 0:
		return o, errs.Field("batch", "must not be negative")
	case o.Interval < 0:
		return o, errs.Field("interval", "must not be negative")
	case o.Queue < 0:
		return o, errs.Field("queue", "must not be negative")
	case o.FlushTimeout < 0:
		return o, errs.Field("flush_timeout", "must not be negative")
	case o.BackoffInitial < 0 || o.BackoffMax < 0:
		return o, errs.Field("backoff", "must not be negative")
	}
	if o.Batch == 0 {
		o.Batch = DefaultBatch
	}
	if o.Interval == 0 {
		o.Interval = DefaultInterval
	}
	if o.Queue == 0 {
		o.Queue = DefaultQueue
	}
	if o.FlushTimeout == 0 {
		o.FlushTimeout = DefaultFlushTimeout
	}
	if o.BackoffInitial == 0 {
		o.BackoffInitial = DefaultBackoffInitial
	}
	if o.BackoffMax == 0 {
		o.BackoffMax = max(DefaultBackoffMax, o.BackoffInitial)
	}
	if o.BackoffMax < o.BackoffInitial {
		return o, errs.Field("backoff", "initial must be at most max")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Meter == nil {
		o.Meter = noop.NewMeterProvider().Meter("")
	}
	if o.Enqueued == nil {
		o.Enqueued = func() {}
	}
	return o, nil
}

// Recorder queues usage records and writes them to the outbox in batches; see the package
// documentation.
type Recorder struct {
	store Store
	opts  Options
	log   *slog.Logger

	queue chan events.OutboxRecord

	started atomic.Bool
	// stopped is set when Run's context ends; Record refuses from then on. inRecord counts the
	// Record calls between their check of stopped and their send, so Run can wait for them
	// before its last look at the queue: a Record that returned true is always seen.
	stopped  atomic.Bool
	inRecord atomic.Int64
	lastLog  atomic.Int64 // unix nanoseconds of the last drop logged

	recorded metric.Int64Counter
	dropped  metric.Int64Counter
	failures metric.Int64Counter
	dropAttr map[string]metric.AddOption // precomputed per reason: Record must not allocate for it
}

// NewRecorder returns a recorder writing to store. Start it with Run. Invalid options are an
// errs.Invalid.
func NewRecorder(store Store, opts Options) (*Recorder, error) {
	if store == nil {
		return nil, errors.New("billing: store is required")
	}
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("billing options: %w", err)
	}
	r := &Recorder{
		store: store, opts: opts,
		log:   opts.Logger.With(slog.String("component", "billing-recorder")),
		queue: make(chan events.OutboxRecord, opts.Queue),
	}
	m := opts.Meter
	if r.recorded, err = m.Int64Counter("nops_billing_usage_recorded_total",
		metric.WithDescription("Billing usage records committed to the outbox.")); err != nil {
		return nil, fmt.Errorf("billing metrics: %w", err)
	}
	if r.dropped, err = m.Int64Counter("nops_billing_usage_dropped_total",
		metric.WithDescription("Billing usage records not written, by reason: queue_full, invalid, stopped, shutdown.")); err != nil {
		return nil, fmt.Errorf("billing metrics: %w", err)
	}
	if r.failures, err = m.Int64Counter("nops_billing_usage_batch_failures_total",
		metric.WithDescription("Billing usage batch transactions that failed (each is retried).")); err != nil {
		return nil, fmt.Errorf("billing metrics: %w", err)
	}
	r.dropAttr = map[string]metric.AddOption{}
	for _, reason := range []string{ReasonQueueFull, ReasonInvalid, ReasonStopped, ReasonShutdown} {
		r.dropAttr[reason] = metric.WithAttributeSet(attribute.NewSet(attribute.String("reason", reason)))
	}
	return r, nil
}

// Record queues u to be written and reports whether it was queued. It never blocks: it returns
// false, counting the record in nops_billing_usage_dropped_total, when the queue is full, u is
// invalid, or Run's context has ended.
func (r *Recorder) Record(u Usage) bool {
	if len(r.queue) == cap(r.queue) {
		// Overloaded: shed before paying for the event. The send below decides in the end.
		r.drop(ReasonQueueFull, 1, nil)
		return false
	}
	rec, err := u.Record()
	if err != nil {
		r.drop(ReasonInvalid, 1, err)
		return false
	}
	return r.enqueue(rec)
}

// RecordEvents queues evs — events the caller built, such as the nops.agent.breaker_changed.v1
// of a breaker (RecordOutbox takes records built with events.NewRecord) — to be written in the
// same batches as the usage records, in order, and reports whether all of them were queued. Like Record it never blocks and counts what
// it drops in nops_billing_usage_dropped_total: every event when one of them is not a valid
// outbox record (reason invalid) or when the queue has no room for all of them (queue_full). A
// queue that fills up part way — other callers took the last places between the check and the
// sends — keeps the events already queued and drops the rest: each event stands alone for its
// consumers, so a partial write loses records without making any wrong.
func (r *Recorder) RecordEvents(evs ...events.Event) bool {
	if len(evs) == 0 {
		return true
	}
	if cap(r.queue)-len(r.queue) < len(evs) {
		r.drop(ReasonQueueFull, len(evs), nil)
		return false
	}
	recs := make([]events.OutboxRecord, 0, len(evs))
	for _, e := range evs {
		rec, err := e.Outbox()
		if err != nil {
			r.drop(ReasonInvalid, len(evs), err)
			return false
		}
		recs = append(recs, rec)
	}
	return r.enqueue(recs...)
}

// RecordOutbox is RecordEvents for events already in their outbox form — built with
// events.NewRecord, as the invoke path builds the nops.invocation.completed.v1 and
// nops.billing.usage.v1 of each call — with the same rules: in order, never blocking, all or
// nothing counted as dropped when a record is invalid (OutboxRecord.Validate, which the store
// would refuse) or the queue has no room for all of them.
func (r *Recorder) RecordOutbox(recs ...events.OutboxRecord) bool {
	if len(recs) == 0 {
		return true
	}
	if cap(r.queue)-len(r.queue) < len(recs) {
		r.drop(ReasonQueueFull, len(recs), nil)
		return false
	}
	for _, rec := range recs {
		if err := rec.Validate(); err != nil {
			r.drop(ReasonInvalid, len(recs), err)
			return false
		}
	}
	return r.enqueue(recs...)
}

// enqueue puts recs on the queue without blocking; see Record and RecordEvents.
func (r *Recorder) enqueue(recs ...events.OutboxRecord) bool {
	r.inRecord.Add(1)
	defer r.inRecord.Add(-1)
	if r.stopped.Load() {
		r.drop(ReasonStopped, len(recs), nil)
		return false
	}
	for i, rec := range recs {
		select {
		case r.queue <- rec:
		default:
			r.drop(ReasonQueueFull, len(recs)-i, nil)
			return false
		}
	}
	return true
}

// Queued returns how many records wait to be written (not counting a batch in hand).
func (r *Recorder) Queued() int { return len(r.queue) }

// drop counts n records not written and logs it, at most once per dropLogEvery.
func (r *Recorder) drop(reason string, n int, cause error) {
	r.dropped.Add(context.Background(), int64(n), r.dropAttr[reason])
	now := time.Now().UnixNano()
	last := r.lastLog.Load()
	if now-last < int64(dropLogEvery) || !r.lastLog.CompareAndSwap(last, now) {
		return
	}
	attrs := []any{slog.String("reason", reason), slog.Int("records", n)}
	if cause != nil {
		attrs = append(attrs, slog.String("error", cause.Error()))
	}
	r.log.Warn("billing usage dropped (logged at most every 10 s; see nops_billing_usage_dropped_total)", attrs...)
}

// Run writes queued records until ctx ends, then writes what is queued within FlushTimeout and
// returns. It returns nil when everything accepted was written, and an error saying how many
// records were lost otherwise; failures before the end are logged and retried, not returned.
func (r *Recorder) Run(ctx context.Context) error {
	if !r.started.CompareAndSwap(false, true) {
		return errors.New("billing: Run called twice")
	}
	batch := make([]events.OutboxRecord, 0, r.opts.Batch)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var due <-chan time.Time // the batch's timer, nil while the batch is empty
	bo := backoff{initial: r.opts.BackoffInitial, max: r.opts.BackoffMax}
	for {
		select {
		case <-ctx.Done():
			return r.shutdown(ctx, batch)
		case rec := <-r.queue:
			batch = append(batch, rec)
			if len(batch) == 1 {
				timer.Reset(r.opts.Interval)
				due = timer.C
			}
			if len(batch) < r.opts.Batch {
				continue
			}
		case <-due:
		}
		timer.Stop()
		due = nil
		if !r.commit(ctx, batch, &bo) {
			return r.shutdown(ctx, batch) // ctx ended while the batch was retried
		}
		batch = batch[:0]
	}
}

// commit writes batch, retrying with backoff until it is written (true) or ctx ends (false).
func (r *Recorder) commit(ctx context.Context, batch []events.OutboxRecord, bo *backoff) bool {
	for {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		err := r.write(actx, batch)
		cancel()
		if err == nil {
			bo.reset()
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		wait := bo.next()
		r.log.WarnContext(ctx, "billing usage batch not written; retrying",
			slog.Int("records", len(batch)), slog.Duration("retry_in", wait), slog.String("error", err.Error()))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
	}
}

// errCommitted says the batch's first id is already in the outbox.
var errCommitted = errors.New("batch committed by an earlier attempt")

// write runs one transaction adding batch to the outbox. A batch found already committed (see
// the package documentation) counts as written.
func (r *Recorder) write(ctx context.Context, batch []events.OutboxRecord) error {
	err := r.store.InTx(ctx, func(ctx context.Context) error {
		for i, rec := range batch {
			if err := r.store.AddToOutbox(ctx, rec); err != nil {
				if i == 0 && errs.Is(err, errs.Conflict) {
					return errCommitted
				}
				return fmt.Errorf("add usage record %d of %d: %w", i+1, len(batch), err)
			}
		}
		return nil
	})
	switch {
	case errors.Is(err, errCommitted):
		r.log.InfoContext(ctx, "billing usage batch was committed by an attempt reported as failed", slog.Int("records", len(batch)))
	case err != nil:
		r.failures.Add(ctx, 1)
		return fmt.Errorf("write %d billing usage records: %w", len(batch), err)
	}
	r.recorded.Add(ctx, int64(len(batch)))
	r.opts.Enqueued()
	return nil
}

// shutdown stops Record, then writes batch and everything queued within FlushTimeout.
func (r *Recorder) shutdown(ctx context.Context, batch []events.OutboxRecord) error {
	r.stopped.Store(true)
	// A Record that read stopped as false is between its check and its send, which does not
	// block: wait for it, so the queue below holds every record Record accepted.
	for r.inRecord.Load() > 0 {
		runtime.Gosched()
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.opts.FlushTimeout)
	defer cancel()
	bo := backoff{initial: r.opts.BackoffInitial, max: r.opts.BackoffMax}
	for {
		for len(batch) < r.opts.Batch && len(r.queue) > 0 {
			batch = append(batch, <-r.queue)
		}
		if len(batch) == 0 {
			return nil
		}
		if !r.commit(fctx, batch, &bo) {
			lost := len(batch) + len(r.queue)
			r.drop(ReasonShutdown, lost, nil)
			r.log.Error("billing usage records lost at shutdown: the database did not take them in time",
				slog.Int("records", lost), slog.Duration("flush_timeout", r.opts.FlushTimeout))
			for len(r.queue) > 0 {
				<-r.queue
			}
			return fmt.Errorf("billing: %d usage records not written within the flush timeout %s", lost, r.opts.FlushTimeout)
		}
		batch = batch[:0]
	}
}

// backoff paces retries: exponential from initial to max, each wait drawn from its upper half.
type backoff struct {
	initial, max time.Duration
	n            int
}

func (b *backoff) next() time.Duration {
	d := b.initial
	for i := 0; i < b.n && d < b.max; i++ {
		d *= 2
	}
	d = min(d, b.max)
	b.n++
	if d <= 1 {
		return d
	}
	return d/2 + mrand.N(d/2+1)
}

func (b *backoff) reset() { b.n = 0 }
