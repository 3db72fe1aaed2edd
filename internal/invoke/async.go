package invoke

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/events"
)

// AsyncConsumer is the name of the kernel consumer that runs async invocations: its durable
// consumer group on the bus and its name in the DLQ.
const AsyncConsumer = "invocations"

// Defaults of AsyncOptions.
const (
	DefaultResultTTL       = 24 * time.Hour
	DefaultMaxRequestBytes = 1 << 20
	DefaultAsyncWorkers    = 64
	DefaultLeaseMargin     = 10 * time.Second
	DefaultPendingGrace    = time.Minute
	DefaultMaxRuns         = 5
	DefaultSweepInterval   = 5 * time.Second
	DefaultPurgeInterval   = time.Minute
	DefaultDrainTimeout    = 10 * time.Second
)

// purgeBatch bounds one purge statement, so a large backlog is deleted in short transactions.
const purgeBatch = 1000

// AsyncOptions tune async invocations. Zero fields take the defaults.
type AsyncOptions struct {
	ResultTTL       time.Duration // how long an invocation and its result are kept; default 24 h
	MaxRequestBytes int64         // the largest request body stored (413 beyond); default 1 MiB
	Workers         int           // async calls running at once on this replica; default 64
	// LeaseMargin is added to a call's deadline to make its worker's lease: the time after which
	// another worker may take the invocation over, when the first died. Default 10 s.
	LeaseMargin time.Duration
	// PendingGrace is how long a pending invocation waits for its event before the sweeper runs
	// it anyway (the event was dead-lettered, or the bus was down). Default 1 min.
	PendingGrace time.Duration
	// MaxRuns is how many runs an invocation gets (each dead or stopped worker costs one) before
	// it fails as abandoned, so a request that crashes its worker cannot crash them all in turn.
	// Default 5.
	MaxRuns       int
	SweepInterval time.Duration // how often Run looks for the work of dead workers; default 5 s
	PurgeInterval time.Duration // how often Run deletes expired invocations; default 1 min
	// DrainTimeout is how long running calls may finish once Run's context ends; the rest are
	// cancelled and given back (pending) for another replica. Default 10 s.
	DrainTimeout time.Duration
	Logger       *slog.Logger
	Now          func() time.Time
	// Enqueued is called after a transaction that added events to the outbox committed (the
	// relay's Notify). It must not block.
	Enqueued func()
}

func (o AsyncOptions) withDefaults() AsyncOptions {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.ResultTTL, DefaultResultTTL)
	def(&o.LeaseMargin, DefaultLeaseMargin)
	def(&o.PendingGrace, DefaultPendingGrace)
	def(&o.SweepInterval, DefaultSweepInterval)
	def(&o.PurgeInterval, DefaultPurgeInterval)
	def(&o.DrainTimeout, DefaultDrainTimeout)
	if o.MaxRequestBytes <= 0 {
		o.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if o.Workers <= 0 {
		o.Workers = DefaultAsyncWorkers
	}
	if o.MaxRuns <= 0 {
		o.MaxRuns = DefaultMaxRuns
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Enqueued == nil {
		o.Enqueued = func() {}
	}
	return o
}

// Async runs async invocations: Submit stores one with its nops.invocation.requested.v1 event,
// Handler (the "invocations" consumer) and the sweeper of Run claim and run them through the
// Service, and each result is stored with its nops.invocation.completed.v1 and
// nops.billing.usage.v1 events in one transaction. See docs/routing.md, "Async invocations".
//
// Exactly one result per invocation: a run starts only after a compare-and-set claim (pending →
// running, with a lease), so a redelivered event, a second replica or the sweeper finds the
// invocation claimed or finished and does nothing; and a run stores its result only while its
// claim is the current one (the Attempts count is the fencing token), so a run that outlived
// its lease cannot overwrite the result of the run that took over. The agent may be called more
// than once only when a worker dies or stalls past its lease mid-call; the kernel forwards the
// caller's Idempotency-Key to it for that case.
//
// Calls run on goroutines of the Async, not of the bus handler: the handler acks once the claim
// is committed, so a call may take longer than the bus's ack wait. What a dead worker held is
// found by Run's sweeper once its lease ends. At most AsyncOptions.Workers calls run at once;
// beyond that the handler waits for a free worker, and when none frees up within the delivery's
// ack wait it acks and leaves the pending invocation to the sweeper (after PendingGrace).
type Async struct {
	svc  *Service
	st   AsyncStore
	opts AsyncOptions
	log  *slog.Logger

	slots chan struct{} // a token per running call

	mu       sync.Mutex
	stopping bool
	runs     sync.WaitGroup // calls running, counted under mu
	base     context.Context
	cancel   context.CancelFunc // ends the calls still running after the drain
}

// NewAsync returns the async engine over svc and st. Start Run for the sweeper, the purge and a
// clean shutdown.
func NewAsync(svc *Service, st AsyncStore, opts AsyncOptions) (*Async, error) {
	if svc == nil || st == nil {
		return nil, errors.New("invoke: async invocations need the service and a store")
	}
	opts = opts.withDefaults()
	base, cancel := context.WithCancel(context.Background())
	return &Async{
		svc: svc, st: st, opts: opts,
		log:   opts.Logger.With(slog.String("component", "invoke-async")),
		slots: make(chan struct{}, opts.Workers),
		base:  base, cancel: cancel,
	}, nil
}

// Available reports whether a live agent of the tenant offers capability (through the
// candidate cache): nil, or an errs.NotFound.
func (s *Service) Available(ctx context.Context, tenantID, capability string) error {
	agents, err := s.cands.get(ctx, tenantID, capability)
	if err != nil {
		return fmt.Errorf("routable agents: %w", err)
	}
	if len(agents) == 0 {
		return errs.New(errs.NotFound, "no live agent of this tenant offers capability %q", capability)
	}
	return nil
}

// callTimeout is the deadline a call of capability gets (the route's, else the default), as
// start computes it; when the route cannot be read, the longest a call may take.
func (s *Service) callTimeout(ctx context.Context, tenantID, capability string) time.Duration {
	r, err := s.route(ctx, Request{TenantID: tenantID, Capability: capability})
	if err != nil {
		return s.cfg.MaxTimeout
	}
	timeout := s.cfg.Timeout
	if r != nil && r.TimeoutMs > 0 {
		timeout = time.Duration(r.TimeoutMs) * time.Millisecond
	}
	return min(timeout, s.cfg.MaxTimeout)
}

// completionSinkKey carries a *Completion that the call's completion is copied into.
type completionSinkKey struct{}

// Submit accepts req as an async invocation: it checks that a live agent offers the capability
// (404 otherwise), stores the request — its body (at most MaxRequestBytes, 413 beyond), its
// Content-Type and Idempotency-Key, nothing else of its headers — and its
// nops.invocation.requested.v1 event in one transaction, and returns the pending invocation.
//
// A request with an Idempotency-Key the tenant already used returns that invocation, whatever
// its status, when it was for the same capability and body, and is an errs.Unprocessable
// otherwise; a retried submission therefore never runs twice.
func (a *Async) Submit(ctx context.Context, req Request) (Invocation, error) {
	if int64(len(req.Body)) > a.opts.MaxRequestBytes {
		return Invocation{}, errs.New(errs.TooLarge, "an async invocation's body may be at most %d bytes", a.opts.MaxRequestBytes)
	}
	key := req.Header.Get("Idempotency-Key")
	if key != "" {
		prev, err := a.st.InvocationByKey(ctx, req.TenantID, key)
		if err == nil {
			return a.replay(prev, req)
		}
		if !errs.Is(err, errs.NotFound) {
			return Invocation{}, err
		}
	}
	if err := a.svc.Available(ctx, req.TenantID, req.Capability); err != nil {
		return Invocation{}, err
	}
	now := a.opts.Now().UTC()
	inv := Invocation{
		ID: req.InvocationID, TenantID: req.TenantID, Capability: req.Capability, Status: StatusPending,
		RequestBody: req.Body, RequestContentType: req.Header.Get("Content-Type"), RequestID: req.RequestID,
		IdempotencyKey: key, CreatedAt: now, LeaseUntil: now.Add(a.opts.PendingGrace), ExpiresAt: now.Add(a.opts.ResultTTL),
	}
	if inv.ID == "" {
		inv.ID = NewInvocationID()
	}
	if inv.RequestBody == nil {
		inv.RequestBody = []byte{}
	}
	err := a.st.InTx(ctx, func(ctx context.Context) error {
		if err := a.st.CreateInvocation(ctx, inv); err != nil {
			return err
		}
		return a.enqueue(ctx, events.InvocationRequested{
			InvocationID: inv.ID, Tenant: inv.TenantID, Capability: inv.Capability, CreatedAt: now,
		}, now, traceparent(ctx))
	})
	if errors.Is(err, ErrKeyUsed) {
		// A concurrent submission with the same key won the insert.
		prev, err := a.st.InvocationByKey(ctx, req.TenantID, key)
		if err != nil {
			return Invocation{}, err
		}
		return a.replay(prev, req)
	}
	if err != nil {
		return Invocation{}, fmt.Errorf("submit invocation of %s: %w", req.Capability, err)
	}
	a.opts.Enqueued()
	return inv, nil
}

// replay answers a submission whose Idempotency-Key names prev.
func (a *Async) replay(prev Invocation, req Request) (Invocation, error) {
	if prev.Capability != req.Capability || !bytes.Equal(prev.RequestBody, req.Body) {
		return Invocation{}, errs.New(errs.Unprocessable, "this Idempotency-Key was used for another request (invocation %s)", prev.ID)
	}
	return prev, nil
}

// Invocation returns the tenant's invocation id; another tenant's is an errs.NotFound like a
// missing one.
func (a *Async) Invocation(ctx context.Context, tenantID, id string) (Invocation, error) {
	return a.st.Invocation(ctx, tenantID, id)
}

// Handler is the "invocations" consumer's handler for nops.invocation.requested.v1: it claims
// the invocation and starts its call. It acks (nil) once the call is started, and also when the
// invocation is finished, gone or held by another worker's live lease: a redelivery never runs
// a call twice. A delivery that is not a valid event of that type is a bus.Terminal error.
func (a *Async) Handler() bus.Handler {
	return func(ctx context.Context, d bus.Delivery) error {
		e, err := events.Parse(d.Payload)
		if err != nil {
			return bus.Terminal(fmt.Errorf("%s: parse event %q: %w", AsyncConsumer, d.ID, err))
		}
		if e.ID != d.ID || e.Tenant != d.Tenant || string(e.Type) != d.Type {
			return bus.Terminal(fmt.Errorf("%s: event %q (tenant %q, type %q) delivered as %q (tenant %q, type %q)",
				AsyncConsumer, e.ID, e.Tenant, e.Type, d.ID, d.Tenant, d.Type))
		}
		p, err := e.Payload()
		if err != nil {
			return bus.Terminal(fmt.Errorf("%s: event %s: %w", AsyncConsumer, e.ID, err))
		}
		r, ok := p.(events.InvocationRequested)
		if !ok {
			return bus.Terminal(fmt.Errorf("%s: event %s is a %s, not an invocation request", AsyncConsumer, e.ID, e.Type))
		}
		err = a.start(ctx, r.Tenant, r.InvocationID, r.Capability, true)
		if errors.Is(err, errNoWorker) {
			// Every worker stayed busy until the delivery's ack wait: the invocation stays
			// pending and the sweeper runs it once PendingGrace has passed. Redelivering instead
			// would only spend delivery attempts and end in the DLQ under a long overload.
			a.log.WarnContext(ctx, "no free async worker; the invocation waits for the sweeper", "invocation", r.InvocationID)
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: start invocation %s: %w", AsyncConsumer, r.InvocationID, err)
		}
		return nil
	}
}

// Run sweeps (runs what dead workers and lost deliveries left, every SweepInterval) and purges
// expired invocations (every PurgeInterval) until ctx ends; then it stops taking work, lets the
// running calls finish for DrainTimeout, cancels and gives back the rest, and returns once every
// call has ended.
func (a *Async) Run(ctx context.Context) error {
	sweep := time.NewTicker(a.opts.SweepInterval)
	defer sweep.Stop()
	purge := time.NewTicker(a.opts.PurgeInterval)
	defer purge.Stop()
	for {
		select {
		case <-ctx.Done():
			a.drain()
			return nil
		case <-sweep.C:
			a.Sweep(ctx)
		case <-purge.C:
			if _, err := a.Purge(ctx); err != nil && ctx.Err() == nil {
				a.log.WarnContext(ctx, "purge expired invocations", "error", err)
			}
		}
	}
}

// Sweep starts the invocations whose lease ended (their worker died) or that waited longer than
// PendingGrace for their event, as far as free workers allow.
func (a *Async) Sweep(ctx context.Context) {
	refs, err := a.st.ReclaimableInvocations(ctx, a.opts.Now(), a.opts.Workers)
	if err != nil {
		if ctx.Err() == nil {
			a.log.WarnContext(ctx, "find invocations to reclaim", "error", err)
		}
		return
	}
	for _, r := range refs {
		if err := a.start(ctx, r.TenantID, r.ID, r.Capability, false); err != nil {
			if !errors.Is(err, errNoWorker) && ctx.Err() == nil {
				a.log.WarnContext(ctx, "reclaim invocation", "invocation", r.ID, "error", err)
			}
			return
		}
	}
}

// Purge deletes the finished invocations past their ExpiresAt and returns how many.
func (a *Async) Purge(ctx context.Context) (int64, error) {
	var total int64
	for {
		n, err := a.st.PurgeInvocations(ctx, a.opts.Now(), purgeBatch)
		total += n
		if err != nil {
			return total, fmt.Errorf("purge invocations: %w", err)
		}
		if n < purgeBatch {
			return total, nil
		}
	}
}

var (
	errNoWorker = errors.New("no free async worker")
	errStopping = errors.New("async invocations are shutting down on this replica")
)

// start claims the invocation and starts its call on a worker. wait says whether to wait for
// a free worker until ctx ends or to give up at once; either way errNoWorker says none was free. An invocation that
// cannot be claimed (finished, gone, another worker's) is no error.
func (a *Async) start(ctx context.Context, tenantID, id, capability string, wait bool) error {
	if wait {
		select {
		case a.slots <- struct{}{}:
		case <-ctx.Done():
			return errNoWorker
		}
	} else {
		select {
		case a.slots <- struct{}{}:
		default:
			return errNoWorker
		}
	}
	started := false
	defer func() {
		if !started {
			<-a.slots
		}
	}()
	a.mu.Lock()
	stopping := a.stopping
	a.mu.Unlock()
	if stopping {
		return errStopping
	}
	timeout := a.svc.callTimeout(ctx, tenantID, capability)
	now := a.opts.Now()
	inv, err := a.st.ClaimInvocation(ctx, tenantID, id, now, now.Add(timeout+a.opts.LeaseMargin))
	switch {
	case errs.Is(err, errs.NotFound):
		a.log.DebugContext(ctx, "invocation to run is gone", "invocation", id)
		return nil
	case errors.Is(err, ErrNotClaimable):
		return nil
	case err != nil:
		return fmt.Errorf("claim invocation %s: %w", id, err)
	}
	a.mu.Lock()
	if a.stopping {
		a.mu.Unlock()
		// Claimed but not run: give it straight back.
		a.release(inv)
		return errStopping
	}
	a.runs.Add(1)
	a.mu.Unlock()
	started = true
	// The call belongs to the Async, not to the delivery whose context ends at the bus's ack
	// wait; it keeps the delivery's trace.
	rctx := trace.ContextWithSpanContext(a.base, trace.SpanContextFromContext(ctx))
	go func() {
		defer func() { <-a.slots }()
		defer a.runs.Done()
		a.run(rctx, inv, timeout)
	}()
	return nil
}

// run calls the agent for the claimed inv and stores the result.
func (a *Async) run(ctx context.Context, inv Invocation, timeout time.Duration) {
	began := a.opts.Now()
	if inv.Attempts > a.opts.MaxRuns {
		a.finish(ctx, inv, InvocationResult{
			Status: StatusFailed, ErrorStatus: http.StatusBadGateway,
			ErrorDetail: fmt.Sprintf("the invocation was abandoned: its workers stopped %d times before it ended", inv.Attempts-1),
		}, Completion{Status: http.StatusBadGateway, Outcome: OutcomeError, StartedAt: began})
		return
	}
	h := http.Header{}
	if inv.RequestContentType != "" {
		h.Set("Content-Type", inv.RequestContentType)
	}
	if inv.IdempotencyKey != "" {
		h.Set("Idempotency-Key", inv.IdempotencyKey)
	}
	var comp Completion
	resp, err := a.svc.Do(context.WithValue(ctx, completionSinkKey{}, &comp), Request{
		TenantID: inv.TenantID, Capability: inv.Capability, InvocationID: inv.ID, RequestID: inv.RequestID,
		Header: h, Body: inv.RequestBody, Timeout: timeout, Async: true,
	})
	if err != nil && ctx.Err() != nil {
		// This replica is shutting down: the call did not fail, it was stopped. Another worker
		// runs it again.
		a.release(inv)
		return
	}
	if comp.InvocationID == "" {
		// Refused before any agent was chosen (no live agent any more): Do reports no completion.
		comp = Completion{Status: statusOf(err), Outcome: OutcomeRejected, StartedAt: began, Duration: a.opts.Now().Sub(began)}
		if e := errs.As(err); e != nil {
			comp.Error = e.Message
		}
	}
	var res InvocationResult
	switch {
	case err != nil:
		res = InvocationResult{Status: StatusFailed, AgentID: comp.AgentID, ErrorStatus: statusOf(err), ErrorDetail: comp.Error}
		if res.ErrorDetail == "" {
			res.ErrorDetail = clientMessage(err)
		}
	default:
		res = InvocationResult{
			Status: StatusCompleted, AgentID: resp.AgentID, ResponseStatus: resp.Status,
			ResponseContentType: resp.Header.Get("Content-Type"), ResponseBody: resp.Body,
		}
		if resp.Status >= 500 {
			res.Status, res.ErrorStatus = StatusFailed, resp.Status
			res.ErrorDetail = fmt.Sprintf("the agent answered %d", resp.Status)
		}
	}
	a.finish(ctx, inv, res, comp)
}

// clientMessage is the message of err a caller may see.
func clientMessage(err error) string {
	if e := errs.As(err); e != nil && e.Code != errs.Internal {
		return e.Message
	}
	return "the call failed"
}

// finish stores res for the run of inv with its events, retrying a failing database until the
// run's lease ends (then another worker runs the invocation again).
func (a *Async) finish(ctx context.Context, inv Invocation, res InvocationResult, comp Completion) {
	now := a.opts.Now().UTC()
	res.TenantID, res.ID, res.Attempt = inv.TenantID, inv.ID, inv.Attempts
	res.CompletedAt, res.ExpiresAt = now, now.Add(a.opts.ResultTTL)
	comp.InvocationID, comp.Tenant, comp.Capability, comp.Async = inv.ID, inv.TenantID, inv.Capability, true
	comp.RequestID = inv.RequestID
	comp.RequestBytes = int64(len(inv.RequestBody))
	if comp.TraceParent == "" {
		comp.TraceParent = traceparent(ctx)
	}
	recs, err := CompletionRecords(comp)
	if err != nil {
		a.log.ErrorContext(ctx, "build the events of a completed invocation", "invocation", inv.ID, "error", err)
	}
	// The result is stored even when this replica is shutting down: it is what the call cost.
	sctx := context.WithoutCancel(ctx)
	wait := 100 * time.Millisecond
	for {
		err := a.st.InTx(sctx, func(ctx context.Context) error {
			if err := a.st.CompleteInvocation(ctx, res); err != nil {
				return err
			}
			for _, rec := range recs {
				if err := a.st.AddToOutbox(ctx, rec); err != nil {
					return fmt.Errorf("enqueue %s: %w", rec.Type, err)
				}
			}
			return nil
		})
		switch {
		case err == nil:
			a.opts.Enqueued()
			return
		case errors.Is(err, ErrClaimLost) || errs.Is(err, errs.NotFound):
			a.log.WarnContext(ctx, "invocation result dropped: another run took the invocation over", "invocation", inv.ID, "attempt", inv.Attempts)
			return
		}
		if a.opts.Now().Add(wait).After(inv.LeaseUntil) {
			a.log.ErrorContext(ctx, "invocation result not stored; it runs again after its lease", "invocation", inv.ID, "error", err)
			return
		}
		a.log.WarnContext(ctx, "store invocation result; retrying", "invocation", inv.ID, "error", err, "retry_in", wait.String())
		time.Sleep(wait) // a background worker's pause between database attempts
		wait = min(2*wait, 5*time.Second)
	}
}

// release gives a claimed invocation back for another worker.
func (a *Async) release(inv Invocation) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.st.ReleaseInvocation(ctx, inv.TenantID, inv.ID, inv.Attempts, a.opts.Now()); err != nil && !errors.Is(err, ErrClaimLost) {
		a.log.Warn("give back an invocation; it runs again after its lease", "invocation", inv.ID, "error", err)
	}
}

// drain stops taking work, waits DrainTimeout for the running calls, then cancels the rest (they
// give their invocations back) and waits for them.
func (a *Async) drain() {
	a.mu.Lock()
	a.stopping = true
	a.mu.Unlock()
	done := make(chan struct{})
	go func() { a.runs.Wait(); close(done) }()
	t := time.NewTimer(a.opts.DrainTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		a.log.Warn("async calls still running at shutdown are stopped and given back", "drain_timeout", a.opts.DrainTimeout.String())
	}
	a.cancel()
	<-done
}

// enqueue adds the event of p to the outbox in ctx's transaction.
func (a *Async) enqueue(ctx context.Context, p events.Payload, now time.Time, tp string) error {
	rec, err := events.NewRecord(p.EventType(), p.EventTenant(), p.EventSubject(), p, now, tp)
	if err != nil {
		return fmt.Errorf("build event %s: %w", p.EventType(), err)
	}
	if err := a.st.AddToOutbox(ctx, rec); err != nil {
		return fmt.Errorf("enqueue %s: %w", p.EventType(), err)
	}
	return nil
}

// CompletionRecords returns the outbox records of the events of a finished call:
// nops.invocation.completed.v1 and nops.billing.usage.v1 (source invocation), both timed at the
// call's end and joined to its trace, built with events.NewRecord (the payloads are checked, the
// encoding is not decoded again: every call pays for these). The kernel records them for
// synchronous calls; Async writes them with the result.
func CompletionRecords(c Completion) ([]events.OutboxRecord, error) {
	start := c.StartedAt.UTC()
	end := start.Add(c.Duration)
	ms := float64(c.Duration) / float64(time.Millisecond)
	done := events.InvocationCompleted{
		InvocationID: c.InvocationID, Tenant: c.Tenant, Capability: c.Capability, AgentID: c.AgentID,
		Status: c.Status, Outcome: c.Outcome, Attempts: c.Attempts, RequestBytes: c.RequestBytes,
		ResponseBytes: c.ResponseBytes, DurationMs: ms, StartedAt: start, Async: c.Async, RequestID: c.RequestID,
	}
	usage := events.BillingUsage{
		Tenant: c.Tenant, AgentID: c.AgentID, Source: events.UsageSourceInvocation, Capability: c.Capability,
		RequestID: c.RequestID, Status: c.Status, RequestBytes: c.RequestBytes, ResponseBytes: c.ResponseBytes,
		DurationMs: ms, StartedAt: start,
	}
	out := make([]events.OutboxRecord, 0, 2)
	for _, p := range []events.Payload{done, usage} {
		r, err := events.NewRecord(p.EventType(), p.EventTenant(), p.EventSubject(), p, end, c.TraceParent)
		if err != nil {
			return nil, fmt.Errorf("event %s of invocation %s: %w", p.EventType(), c.InvocationID, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// traceparent renders the span in ctx as a W3C traceparent, "" without a valid span.
func traceparent(ctx context.Context) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return ""
	}
	return fmt.Sprintf("00-%s-%s-%s", sc.TraceID(), sc.SpanID(), sc.TraceFlags())
}
