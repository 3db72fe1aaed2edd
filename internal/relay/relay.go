package relay

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/events"
)

// Defaults of Options.
const (
	DefaultBatch          = 500
	DefaultPollInterval   = 200 * time.Millisecond
	DefaultLeaseTTL       = 10 * time.Second
	DefaultRetention      = 7 * 24 * time.Hour
	DefaultPurgeInterval  = time.Minute
	DefaultBackoffInitial = 100 * time.Millisecond
	// DefaultBackoffMax keeps retries against a broker that came back within a couple of
	// seconds, so publishing resumes quickly after an outage.
	DefaultBackoffMax = 2 * time.Second
)

// storeTimeout bounds the relay's bookkeeping statements that must not be cut short by the end
// of Run's context (marking what was published, releasing the lease).
const storeTimeout = 5 * time.Second

// backlogEvery is how often the backlog gauges read the database at most.
const backlogEvery = time.Second

// InboxPurger deletes old consumer inbox claims (consumers.InboxStore's PurgeInbox).
type InboxPurger interface {
	PurgeInbox(ctx context.Context, before time.Time) (int64, error)
}

// Options tune a Relay. Zero fields take the defaults.
type Options struct {
	// Holder identifies this relay instance in the lease; it must be unique per running
	// process. Default: host name, process id and random characters.
	Holder string
	// LeaseName is the lease's row. Default DefaultLeaseName.
	LeaseName string
	// Batch is how many records one round reads and publishes. Default 500.
	Batch int
	// PollInterval is the wait between rounds when the outbox is empty and no Notify came, and
	// between a standby's attempts to take the lease. Default 200 ms.
	PollInterval time.Duration
	// LeaseTTL is how long the lease lasts without renewal. Default 10 s.
	LeaseTTL time.Duration
	// Retention is how long published records stay in the outbox. Default 7 days.
	Retention time.Duration
	// Inbox, when set, has its claims older than InboxRetention purged too.
	Inbox InboxPurger
	// InboxRetention is how long consumer inbox claims are kept. Default Retention.
	InboxRetention time.Duration
	// PurgeInterval is how often the lease holder purges. Default 1 min.
	PurgeInterval time.Duration
	// BackoffInitial and BackoffMax pace retries after a failure. Defaults 100 ms and 2 s.
	BackoffInitial time.Duration
	BackoffMax     time.Duration
	// Hold, when set and true, stops publishing (the lease is still kept): the events wait in
	// the outbox. The kernel holds the relay while the bus_down degraded mode is forced on by its
	// flag, for bus maintenance (internal/degrade). Default: never.
	Hold func() bool
	// Logger receives lease changes and failures. Default: discard.
	Logger *slog.Logger
	// Meter records the relay's metrics (see the package documentation). Default: none.
	Meter metric.Meter
	// Now is the wall clock, for the lease's expiry and published_at. Default time.Now.
	Now func() time.Time
}

func (o Options) withDefaults() (Options, error) {
	if o.Holder == "" {
		o.Holder = defaultHolder()
	}
	if o.LeaseName == "" {
		o.LeaseName = DefaultLeaseName
	}
	if o.Batch == 0 {
		o.Batch = DefaultBatch
	}
	if o.PollInterval == 0 {
		o.PollInterval = DefaultPollInterval
	}
	if o.LeaseTTL == 0 {
		o.LeaseTTL = DefaultLeaseTTL
	}
	if o.Retention == 0 {
		o.Retention = DefaultRetention
	}
	if o.InboxRetention == 0 {
		o.InboxRetention = o.Retention
	}
	if o.PurgeInterval == 0 {
		o.PurgeInterval = DefaultPurgeInterval
	}
	if o.BackoffInitial == 0 {
		o.BackoffInitial = DefaultBackoffInitial
	}
	if o.BackoffMax == 0 {
		o.BackoffMax = max(DefaultBackoffMax, o.BackoffInitial)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Meter == nil {
		o.Meter = noop.NewMeterProvider().Meter("")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if err := CheckLease(o.LeaseName, o.Holder, o.LeaseTTL); err != nil {
		return o, err
	}
	switch {
	case o.Batch < 1:
		return o, errs.Field("batch", "must be at least 1")
	case o.PollInterval < 0:
		return o, errs.Field("poll_interval", "must be positive")
	case o.Retention < 0 || o.InboxRetention < 0:
		return o, errs.Field("retention", "must be positive")
	case o.PurgeInterval < 0:
		return o, errs.Field("purge_interval", "must be positive")
	case o.BackoffInitial < 0 || o.BackoffMax < o.BackoffInitial:
		return o, errs.Field("backoff", "initial must be positive and at most max")
	}
	return o, nil
}

func defaultHolder() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	if len(host) > 200 {
		host = host[:200]
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b))
}

// Relay publishes the outbox to the bus; see the package documentation.
type Relay struct {
	store  events.OutboxRelayStore
	leases LeaseStore
	pub    bus.Publisher
	opts   Options
	log    *slog.Logger

	wake    chan struct{} // Notify's coalescing signal
	running atomic.Bool
	leader  atomic.Bool // read by the metrics callback and the purge loop

	published metric.Int64Counter
	failures  metric.Int64Counter
	backlogG  metric.Int64ObservableGauge
	ageG      metric.Float64ObservableGauge
	leaderG   metric.Int64ObservableGauge

	backlogMu   sync.Mutex
	backlogRead time.Time // when the cached backlog was read (local clock)
	backlog     events.Backlog
	backlogOK   bool
}

// New returns a relay from store's outbox to pub, coordinated with other replicas through
// leases. Invalid options are an errs.Invalid.
func New(store events.OutboxRelayStore, leases LeaseStore, pub bus.Publisher, opts Options) (*Relay, error) {
	if store == nil || leases == nil || pub == nil {
		return nil, errors.New("relay: store, leases and publisher are required")
	}
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("relay options: %w", err)
	}
	r := &Relay{
		store: store, leases: leases, pub: pub, opts: opts,
		log:  opts.Logger.With(slog.String("component", "outbox-relay"), slog.String("holder", opts.Holder)),
		wake: make(chan struct{}, 1),
	}
	m := opts.Meter
	if r.published, err = m.Int64Counter("nops_outbox_published_total",
		metric.WithDescription("Outbox records published to the event bus.")); err != nil {
		return nil, fmt.Errorf("relay metrics: %w", err)
	}
	if r.failures, err = m.Int64Counter("nops_outbox_publish_failures_total",
		metric.WithDescription("Outbox records whose publish failed, counted per attempt.")); err != nil {
		return nil, fmt.Errorf("relay metrics: %w", err)
	}
	if r.backlogG, err = m.Int64ObservableGauge("nops_outbox_backlog",
		metric.WithDescription("Outbox records not yet published.")); err != nil {
		return nil, fmt.Errorf("relay metrics: %w", err)
	}
	if r.ageG, err = m.Float64ObservableGauge("nops_outbox_oldest_age_seconds", metric.WithUnit("s"),
		metric.WithDescription("Age of the oldest outbox record not yet published; 0 when none.")); err != nil {
		return nil, fmt.Errorf("relay metrics: %w", err)
	}
	if r.leaderG, err = m.Int64ObservableGauge("nops_outbox_relay_leader",
		metric.WithDescription("1 while this replica holds the outbox relay lease.")); err != nil {
		return nil, fmt.Errorf("relay metrics: %w", err)
	}
	return r, nil
}

// Holder is this relay's lease holder id.
func (r *Relay) Holder() string { return r.opts.Holder }

// Leader reports whether this relay holds the lease.
func (r *Relay) Leader() bool { return r.leader.Load() }

// Notify wakes the relay to publish now. It never blocks, and signals that arrive while one is
// pending coalesce. It may be called on a nil *Relay (it does nothing), so callers can hold an
// optional relay.
func (r *Relay) Notify() {
	if r == nil {
		return
	}
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// lease is Run's view of the lease.
type lease struct {
	held     bool
	acquired time.Time // Now() just before the statement that took or renewed it
}

// Run publishes until ctx ends, then releases the lease (if held) and returns nil. Failures
// are logged and retried, never returned; only a second concurrent Run is an error.
func (r *Relay) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("relay: already running")
	}
	defer r.running.Store(false)

	reg, err := r.opts.Meter.RegisterCallback(r.observe, r.backlogG, r.ageG, r.leaderG)
	if err != nil {
		return fmt.Errorf("relay metrics: %w", err)
	}
	defer func() { _ = reg.Unregister() }()

	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { r.purgeLoop(ctx) })

	var (
		l  lease
		bo = backoff{initial: r.opts.BackoffInitial, max: r.opts.BackoffMax}
	)
	defer r.release(ctx, &l)
	for ctx.Err() == nil {
		wait, wakeable := r.round(ctx, &l, &bo)
		if renewIn := l.acquired.Add(r.opts.LeaseTTL / 2).Sub(r.opts.Now()); l.held && renewIn > 0 {
			// Wake in time to renew the lease, whatever the wait asked for. (A renewal already
			// due, which failed, is retried after the wait.)
			wait = min(wait, renewIn)
		}
		if !r.sleep(ctx, wait, wakeable) {
			break
		}
	}
	return nil
}

// round renews or takes the lease and, holding it, publishes one batch. It returns how long to
// wait before the next round and whether Notify may cut the wait short.
func (r *Relay) round(ctx context.Context, l *lease, bo *backoff) (time.Duration, bool) {
	ttl := r.opts.LeaseTTL
	now := r.opts.Now()
	if !l.held || now.Sub(l.acquired) >= ttl/2 {
		actx, cancel := context.WithTimeout(ctx, ttl/2)
		ok, err := r.leases.AcquireLease(actx, r.opts.LeaseName, r.opts.Holder, ttl, now)
		cancel()
		switch {
		case ctx.Err() != nil:
			return 0, false
		case err != nil:
			r.log.WarnContext(ctx, "outbox relay: cannot take or renew the lease", slog.String("error", err.Error()))
			if !r.safe(*l) {
				r.setHeld(ctx, l, false)
				return bo.next(), false
			}
			// Still safely within the lease taken before: go on, renewing next round.
		case !ok:
			if l.held {
				r.log.WarnContext(ctx, "outbox relay: lease lost to another replica")
			}
			r.setHeld(ctx, l, false)
			return r.opts.PollInterval, false
		default:
			if !l.held {
				r.log.InfoContext(ctx, "outbox relay: lease taken; publishing")
			}
			r.setHeld(ctx, l, true)
			l.acquired = now
		}
	}
	if !r.safe(*l) {
		return 0, false // the acquiring statement took too long: renew first
	}
	if r.opts.Hold != nil && r.opts.Hold() {
		return r.opts.PollInterval, true
	}

	recs, err := r.store.PendingOutbox(ctx, r.opts.Batch)
	if err != nil {
		if ctx.Err() != nil {
			return 0, false
		}
		r.log.WarnContext(ctx, "outbox relay: cannot read the outbox", slog.String("error", err.Error()))
		return bo.next(), false
	}
	if len(recs) == 0 {
		bo.reset()
		return r.opts.PollInterval, true
	}
	if !r.safe(*l) {
		return 0, false // reading took too long: renew first
	}
	msgs, ids, held := r.messages(ctx, recs)
	if len(msgs) == 0 {
		return bo.next(), false // only held-back records: see the package documentation
	}

	// The publish must end before the lease could expire, with the margin to spare.
	remaining := r.safeUntil(*l).Sub(r.opts.Now())
	if remaining <= 0 {
		return 0, false // renew first; the records are read again
	}
	pctx, cancel := context.WithTimeout(ctx, remaining)
	err = r.pub.Publish(pctx, msgs...)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return 0, false
		}
		r.failures.Add(ctx, int64(len(ids)))
		r.log.WarnContext(ctx, "outbox relay: publish failed; retrying with backoff",
			slog.Int("records", len(ids)), slog.String("first_id", ids[0]),
			slog.Int("attempts", recs[0].Attempts+1), slog.String("error", err.Error()))
		if rerr := r.store.RecordOutboxFailure(ctx, ids); rerr != nil && ctx.Err() == nil {
			r.log.WarnContext(ctx, "outbox relay: cannot record the failure", slog.String("error", rerr.Error()))
		}
		return bo.next(), false
	}
	r.published.Add(ctx, int64(len(ids)))
	// Marked even when ctx just ended: what was published should not be published again.
	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	err = r.store.MarkPublished(mctx, ids, r.opts.Now())
	cancel()
	if err != nil {
		// Published again later: the broker's dedup and the consumers' inbox absorb it.
		r.log.WarnContext(ctx, "outbox relay: cannot mark records published", slog.Int("records", len(ids)), slog.String("error", err.Error()))
		return bo.next(), false
	}
	switch {
	case len(recs) == r.opts.Batch:
		bo.reset()
		return 0, false // more are waiting
	case held > 0:
		return bo.next(), false // retry the held-back records slowly
	default:
		bo.reset()
		return r.opts.PollInterval, true
	}
}

// messages turns recs into bus messages in seq order. A record the bus would reject is held back
// with every later record of its subject, and its failure recorded; held counts them.
func (r *Relay) messages(ctx context.Context, recs []events.OutboxRecord) (msgs []bus.Message, ids []string, held int) {
	msgs = make([]bus.Message, 0, len(recs))
	ids = make([]string, 0, len(recs))
	var blocked map[string]bool
	var bad []string
	for _, rec := range recs {
		if blocked[rec.Subject] {
			held++
			continue
		}
		m := bus.Message{ID: rec.ID, Tenant: rec.Tenant, Type: string(rec.Type), TraceParent: traceParent(rec.Payload), Payload: rec.Payload}
		if err := m.Validate(); err != nil {
			if blocked == nil {
				blocked = map[string]bool{}
			}
			blocked[rec.Subject] = true
			bad = append(bad, rec.ID)
			held++
			r.log.ErrorContext(ctx, "outbox relay: record cannot be published; holding back its subject",
				slog.String("id", rec.ID), slog.Int64("seq", rec.Seq), slog.String("subject", rec.Subject),
				slog.Int("attempts", rec.Attempts+1), slog.String("error", err.Error()))
			continue
		}
		msgs = append(msgs, m)
		ids = append(ids, rec.ID)
	}
	if len(bad) > 0 {
		r.failures.Add(ctx, int64(len(bad)))
		if err := r.store.RecordOutboxFailure(ctx, bad); err != nil && ctx.Err() == nil {
			r.log.WarnContext(ctx, "outbox relay: cannot record the failure", slog.String("error", err.Error()))
		}
	}
	return msgs, ids, held
}

// safeUntil is the instant after which the relay must not publish under lease l.
func (r *Relay) safeUntil(l lease) time.Time {
	return l.acquired.Add(r.opts.LeaseTTL - r.opts.LeaseTTL/4)
}

// safe reports whether l is held with the margin still to spare.
func (r *Relay) safe(l lease) bool { return l.held && r.opts.Now().Before(r.safeUntil(l)) }

func (r *Relay) setHeld(ctx context.Context, l *lease, held bool) {
	if l.held && !held {
		r.log.InfoContext(ctx, "outbox relay: not holding the lease; standing by")
	}
	l.held = held
	r.leader.Store(held)
}

// release gives the lease up at the end of Run, so a standby takes over at once.
func (r *Relay) release(ctx context.Context, l *lease) {
	if !l.held {
		return
	}
	r.setHeld(ctx, l, false)
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	defer cancel()
	if err := r.leases.ReleaseLease(rctx, r.opts.LeaseName, r.opts.Holder); err != nil {
		r.log.WarnContext(ctx, "outbox relay: cannot release the lease; another replica takes over when it expires",
			slog.String("error", err.Error()))
	}
}

// sleep waits d (Notify too, when wakeable) and reports whether ctx is still running.
func (r *Relay) sleep(ctx context.Context, d time.Duration, wakeable bool) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	var wake <-chan struct{}
	if wakeable {
		wake = r.wake
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	case <-wake:
	}
	return true
}

// purgeLoop purges old published records and inbox claims while this relay holds the lease.
func (r *Relay) purgeLoop(ctx context.Context) {
	t := time.NewTicker(r.opts.PurgeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if r.leader.Load() {
			r.purge(ctx)
		}
	}
}

func (r *Relay) purge(ctx context.Context) {
	now := r.opts.Now()
	n, err := r.store.PurgePublishedOutbox(ctx, now.Add(-r.opts.Retention))
	if err != nil && ctx.Err() == nil {
		r.log.WarnContext(ctx, "outbox relay: cannot purge published records", slog.String("error", err.Error()))
	} else if n > 0 {
		r.log.DebugContext(ctx, "outbox relay: purged published records", slog.Int64("records", n))
	}
	if r.opts.Inbox == nil {
		return
	}
	n, err = r.opts.Inbox.PurgeInbox(ctx, now.Add(-r.opts.InboxRetention))
	if err != nil && ctx.Err() == nil {
		r.log.WarnContext(ctx, "outbox relay: cannot purge inbox claims", slog.String("error", err.Error()))
	} else if n > 0 {
		r.log.DebugContext(ctx, "outbox relay: purged inbox claims", slog.Int64("claims", n))
	}
}

// observe is the metrics callback: the backlog (read at most once per backlogEvery) and
// leadership.
func (r *Relay) observe(ctx context.Context, o metric.Observer) error {
	leader := int64(0)
	if r.leader.Load() {
		leader = 1
	}
	o.ObserveInt64(r.leaderG, leader)
	b, ok := r.readBacklog(ctx)
	if !ok {
		return nil
	}
	o.ObserveInt64(r.backlogG, b.Pending)
	age := 0.0
	if b.Pending > 0 && !b.Oldest.IsZero() {
		age = max(0, r.opts.Now().Sub(b.Oldest).Seconds())
	}
	o.ObserveFloat64(r.ageG, age)
	return nil
}

func (r *Relay) readBacklog(ctx context.Context) (events.Backlog, bool) {
	r.backlogMu.Lock()
	defer r.backlogMu.Unlock()
	if !r.backlogRead.IsZero() && time.Since(r.backlogRead) < backlogEvery {
		return r.backlog, r.backlogOK
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	b, err := r.store.OutboxBacklog(ctx)
	r.backlogRead, r.backlog, r.backlogOK = time.Now(), b, err == nil
	if err != nil {
		r.log.WarnContext(ctx, "outbox relay: cannot read the backlog", slog.String("error", err.Error()))
	}
	return b, err == nil
}

// traceParent returns the payload's top-level "traceparent" member when it is a W3C traceparent
// of version 00, else "". It decodes that one member only, not the whole event: the payload was
// validated when it was written, and tracing is best effort. A payload in the layout the events
// package writes (every record's) is not decoded at all.
func traceParent(payload []byte) string {
	if tp, ok := events.TraceParentAttr(payload); ok {
		if !validTraceParent(tp) {
			return ""
		}
		return tp
	}
	var v struct {
		TraceParent string `json:"traceparent"`
	}
	if err := json.Unmarshal(payload, &v); err != nil || !validTraceParent(v.TraceParent) {
		return ""
	}
	return v.TraceParent
}

// validTraceParent checks the W3C Trace Context version-00 form, 00-<trace id>-<parent id>-<flags>
// in lower-case hex, with ids not all zero.
func validTraceParent(s string) bool {
	if len(s) != 55 || s[:3] != "00-" || s[35] != '-' || s[52] != '-' {
		return false
	}
	return lowerHex(s[3:35], true) && lowerHex(s[36:52], true) && lowerHex(s[53:], false)
}

func lowerHex(h string, nonZero bool) bool {
	zero := true
	for i := 0; i < len(h); i++ {
		c := h[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
		zero = zero && c == '0'
	}
	return !(nonZero && zero)
}

// backoff is exponential with jitter: each wait is drawn from [d/2, d], d doubling from initial
// up to max; reset starts again from initial.
type backoff struct {
	initial, max, cur time.Duration
}

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.initial
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	if b.cur <= 0 {
		return 0
	}
	return b.cur/2 + mrand.N(b.cur/2+1)
}

func (b *backoff) reset() { b.cur = 0 }
