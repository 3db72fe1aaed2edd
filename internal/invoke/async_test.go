package invoke_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/events"
	"github.com/nops-kernel/nops/internal/invoke"
	"github.com/nops-kernel/nops/internal/store/sqlite"
	"github.com/nops-kernel/nops/internal/tenant"
)

// clock is a settable time for the async engine's leases, so tests move past a lease without
// waiting for it.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// asyncWorld is an async engine over a real SQLite store with the fleet's tenant, and the
// counts of the agent calls.
type asyncWorld struct {
	st    *sqlite.Store
	a     *invoke.Async
	clock *clock
	stop  func()
}

func openStore(t *testing.T) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(t.Context(), sqlite.Config{Path: filepath.Join(t.TempDir(), "nops.db")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	if err := st.MigrateUp(t.Context()); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	for _, id := range []string{tenantID, otherTenant} {
		err := st.CreateTenant(t.Context(), tenant.Tenant{ID: id, Name: "t" + id[len(id)-4:], Status: tenant.StatusActive, CreatedAt: now, UpdatedAt: now, Version: 1})
		if err != nil {
			t.Fatal(err)
		}
	}
	return st
}

const otherTenant = "ten_01jzyyyyyyyyyyyyyyyyyyyyyy"

// newAsync builds the engine over the fleet with Run going (its sweeper only runs when a test
// calls Sweep); the test's cleanup stops it and waits for its calls.
func newAsync(t *testing.T, f *fleet, opts invoke.AsyncOptions, cfg ...invoke.Config) *asyncWorld {
	t.Helper()
	c := invoke.Config{}
	if len(cfg) > 0 {
		c = cfg[0]
	}
	svc, _ := newService(t, f, c)
	w := &asyncWorld{st: openStore(t), clock: &clock{t: time.Now().UTC()}}
	opts.Now = w.clock.Now
	opts.SweepInterval, opts.PurgeInterval = time.Hour, time.Hour
	var err error
	if w.a, err = invoke.NewAsync(svc, w.st, opts); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = w.a.Run(ctx); close(done) }()
	var once sync.Once
	w.stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(w.stop)
	return w
}

// submit submits a call of text.summarize with body and headers ("Name: value").
func (w *asyncWorld) submit(t *testing.T, body string, headers ...string) invoke.Invocation {
	t.Helper()
	inv, err := w.a.Submit(t.Context(), asyncReq(body, headers...))
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	return inv
}

func asyncReq(body string, headers ...string) invoke.Request {
	h := http.Header{"Content-Type": {"application/json"}}
	for _, kv := range headers {
		k, v, _ := strings.Cut(kv, ":")
		h.Set(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	return invoke.Request{TenantID: tenantID, Capability: "text.summarize", RequestID: "req_1", Header: h, Body: []byte(body)}
}

// outbox returns the events waiting in the outbox, parsed, oldest first.
func (w *asyncWorld) outbox(t *testing.T) []events.Event {
	t.Helper()
	recs, err := w.st.PendingOutbox(t.Context(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	schemas, err := events.LoadSchemas(os.DirFS("../../api/events"))
	if err != nil {
		t.Fatal(err)
	}
	var out []events.Event
	for _, r := range recs {
		if err := schemas.Validate(r.Payload); err != nil {
			t.Errorf("event %s does not match its schema: %v", r.ID, err)
		}
		e, err := events.Parse(r.Payload)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

// delivery is the bus delivery of the outbox's requested event of inv.
func (w *asyncWorld) delivery(t *testing.T, inv invoke.Invocation) bus.Delivery {
	t.Helper()
	recs, err := w.st.PendingOutbox(t.Context(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Type != events.TypeInvocationRequested {
			continue
		}
		e, _ := events.Parse(r.Payload)
		p, _ := e.Payload()
		if p.(events.InvocationRequested).InvocationID == inv.ID {
			return bus.Delivery{Message: bus.Message{ID: r.ID, Tenant: r.Tenant, Type: string(r.Type), Payload: r.Payload},
				Consumer: invoke.AsyncConsumer, Attempt: 1}
		}
	}
	t.Fatalf("no requested event of %s in the outbox", inv.ID)
	return bus.Delivery{}
}

// waitStatus polls the invocation until its status is one of want.
func (w *asyncWorld) waitStatus(t *testing.T, id string, want ...string) invoke.Invocation {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		inv, err := w.st.Invocation(t.Context(), tenantID, id)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range want {
			if inv.Status == s {
				return inv
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("invocation %s is %s, want %v", id, inv.Status, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// countingAgent answers every call with status and body, counting calls; the returned channel
// receives each call's Idempotency-Key and content type.
func countingAgent(t *testing.T, f *fleet, status int, body string) (*atomic.Int32, chan http.Header) {
	t.Helper()
	var n atomic.Int32
	seen := make(chan http.Header, 100)
	f.add(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		b, _ := io.ReadAll(r.Body)
		h := r.Header.Clone()
		h.Set("X-Test-Body", string(b))
		seen <- h
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}), "")
	return &n, seen
}

func TestAsyncRunsOnceAndStoresTheResult(t *testing.T) {
	f := &fleet{}
	calls, seen := countingAgent(t, f, http.StatusOK, `{"summary":"short"}`)
	w := newAsync(t, f, invoke.AsyncOptions{})
	inv := w.submit(t, `{"text":"long"}`, "Idempotency-Key: k-1", "X-Secret: not stored", "Authorization: Bearer x")
	if inv.Status != invoke.StatusPending || !strings.HasPrefix(inv.ID, "inv_") {
		t.Fatalf("submitted %+v", inv)
	}
	evs := w.outbox(t)
	if len(evs) != 1 || evs[0].Type != events.TypeInvocationRequested || evs[0].Subject != "tenants/"+tenantID+"/invocations" {
		t.Fatalf("outbox after Submit: %+v", evs)
	}
	d := w.delivery(t, inv)
	h := w.a.Handler()
	if err := h(t.Context(), d); err != nil {
		t.Fatalf("handler: %v", err)
	}
	got := w.waitStatus(t, inv.ID, invoke.StatusCompleted)
	if got.ResponseStatus != 200 || string(got.ResponseBody) != `{"summary":"short"}` || got.ResponseContentType != "application/json" ||
		got.Attempts != 1 || got.AgentID == "" || got.ErrorStatus != 0 || !got.LeaseUntil.IsZero() || got.CompletedAt.IsZero() {
		t.Fatalf("completed invocation %+v", got)
	}
	// The agent got the body, the content type and the idempotency key, nothing else of the
	// caller's headers.
	ah := <-seen
	if ah.Get("X-Test-Body") != `{"text":"long"}` || ah.Get("Idempotency-Key") != "k-1" || ah.Get("Content-Type") != "application/json" ||
		ah.Get("X-Secret") != "" || ah.Get("Authorization") != "" || ah.Get(invoke.HeaderInvocation) != inv.ID {
		t.Fatalf("agent headers %v", ah)
	}

	// A redelivery (and a second replica's delivery) finds it completed and acks: no second call.
	for range 3 {
		if err := h(t.Context(), d); err != nil {
			t.Fatalf("redelivery: %v", err)
		}
	}
	w.stop() // waits for any call a redelivery might have started
	if n := calls.Load(); n != 1 {
		t.Fatalf("agent called %d times, want 1", n)
	}
	// The result's events were written with it.
	var completed *events.InvocationCompleted
	var usage *events.BillingUsage
	for _, e := range w.outbox(t) {
		p, _ := e.Payload()
		switch v := p.(type) {
		case events.InvocationCompleted:
			if completed != nil {
				t.Fatal("two invocation.completed events")
			}
			completed = &v
		case events.BillingUsage:
			if usage != nil {
				t.Fatal("two billing.usage events")
			}
			usage = &v
		}
	}
	if completed == nil || usage == nil {
		t.Fatalf("events missing: completed %v, usage %v", completed, usage)
	}
	if completed.InvocationID != inv.ID || !completed.Async || completed.Status != 200 || completed.Outcome != invoke.OutcomeOK ||
		completed.Attempts != 1 || completed.AgentID != got.AgentID || completed.RequestBytes != 15 || completed.ResponseBytes != 19 ||
		completed.RequestID != "req_1" {
		t.Errorf("invocation.completed %+v", completed)
	}
	if usage.Source != events.UsageSourceInvocation || usage.Capability != "text.summarize" || usage.AgentID != got.AgentID || usage.Status != 200 {
		t.Errorf("billing.usage %+v", usage)
	}
}

func TestAsyncConcurrentDeliveriesCallOnce(t *testing.T) {
	f := &fleet{}
	calls, _ := countingAgent(t, f, http.StatusOK, `{}`)
	w := newAsync(t, f, invoke.AsyncOptions{})
	inv := w.submit(t, `{}`)
	d := w.delivery(t, inv)
	h := w.a.Handler()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if err := h(context.Background(), d); err != nil {
				t.Errorf("handler: %v", err)
			}
		})
	}
	wg.Wait()
	w.waitStatus(t, inv.ID, invoke.StatusCompleted)
	w.stop()
	if n := calls.Load(); n != 1 {
		t.Fatalf("agent called %d times by 8 concurrent deliveries, want 1", n)
	}
}

// TestAsyncLeaseExpiryReclaim: a worker that claimed an invocation and died leaves it running;
// once its lease ends the sweeper runs it again, and the dead worker's late result is refused.
func TestAsyncLeaseExpiryReclaim(t *testing.T) {
	f := &fleet{}
	calls, _ := countingAgent(t, f, http.StatusOK, `{"n":2}`)
	w := newAsync(t, f, invoke.AsyncOptions{LeaseMargin: time.Second}, invoke.Config{Timeout: 2 * time.Second})
	inv := w.submit(t, `{}`)
	// The "dead" worker's claim, made directly.
	now := w.clock.Now()
	dead, err := w.st.ClaimInvocation(t.Context(), tenantID, inv.ID, now, now.Add(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	// Its event delivered again while the lease runs: acked, nothing started.
	if err := w.a.Handler()(t.Context(), w.delivery(t, inv)); err != nil {
		t.Fatalf("handler during the lease: %v", err)
	}
	w.a.Sweep(t.Context())
	if got := w.waitStatus(t, inv.ID, invoke.StatusRunning); got.Attempts != 1 || calls.Load() != 0 {
		t.Fatalf("during the lease: attempts %d, calls %d", got.Attempts, calls.Load())
	}
	// The lease over, the sweeper takes it over.
	w.clock.add(3 * time.Second)
	w.a.Sweep(t.Context())
	got := w.waitStatus(t, inv.ID, invoke.StatusCompleted)
	if got.Attempts != 2 || string(got.ResponseBody) != `{"n":2}` || calls.Load() != 1 {
		t.Fatalf("reclaimed: attempts %d, body %q, calls %d", got.Attempts, got.ResponseBody, calls.Load())
	}
	err = w.st.CompleteInvocation(t.Context(), invoke.InvocationResult{TenantID: tenantID, ID: inv.ID, Attempt: dead.Attempts,
		Status: invoke.StatusFailed, CompletedAt: now, ErrorStatus: 504, ErrorDetail: "late", ExpiresAt: now.Add(time.Hour)})
	if !errors.Is(err, invoke.ErrClaimLost) {
		t.Fatalf("the dead worker's late result: %v, want ErrClaimLost", err)
	}
	if again := w.waitStatus(t, inv.ID, invoke.StatusCompleted); string(again.ResponseBody) != `{"n":2}` {
		t.Fatalf("the result changed: %q", again.ResponseBody)
	}
}

// TestAsyncPendingWithoutEvent: an invocation whose event never arrives is run by the sweeper
// once PendingGrace has passed, not before.
func TestAsyncPendingWithoutEvent(t *testing.T) {
	f := &fleet{}
	calls, _ := countingAgent(t, f, http.StatusAccepted, ``)
	w := newAsync(t, f, invoke.AsyncOptions{PendingGrace: time.Minute})
	inv := w.submit(t, `{}`)
	w.a.Sweep(t.Context())
	if got := w.waitStatus(t, inv.ID, invoke.StatusPending); got.Attempts != 0 {
		t.Fatalf("swept before the grace: %+v", got)
	}
	w.clock.add(time.Minute)
	w.a.Sweep(t.Context())
	got := w.waitStatus(t, inv.ID, invoke.StatusCompleted)
	if got.ResponseStatus != 202 || len(got.ResponseBody) != 0 || calls.Load() != 1 {
		t.Fatalf("swept: %+v, calls %d", got, calls.Load())
	}
}

func TestAsyncFailures(t *testing.T) {
	t.Run("agent answers 500", func(t *testing.T) {
		f := &fleet{}
		countingAgent(t, f, http.StatusInternalServerError, `{"error":"boom"}`)
		w := newAsync(t, f, invoke.AsyncOptions{})
		inv := w.submit(t, `{}`)
		if err := w.a.Handler()(t.Context(), w.delivery(t, inv)); err != nil {
			t.Fatal(err)
		}
		got := w.waitStatus(t, inv.ID, invoke.StatusFailed)
		if got.ErrorStatus != 500 || got.ErrorDetail != "the agent answered 500" || got.ResponseStatus != 500 || string(got.ResponseBody) != `{"error":"boom"}` {
			t.Fatalf("failed %+v", got)
		}
	})
	t.Run("agent unreachable", func(t *testing.T) {
		f := &fleet{}
		f.addURL("http://127.0.0.1:1", "")
		w := newAsync(t, f, invoke.AsyncOptions{})
		inv := w.submit(t, `{}`)
		if err := w.a.Handler()(t.Context(), w.delivery(t, inv)); err != nil {
			t.Fatal(err)
		}
		got := w.waitStatus(t, inv.ID, invoke.StatusFailed)
		if got.ErrorStatus != 502 || got.ErrorDetail == "" || got.ResponseStatus != 0 || got.AgentID != "" {
			t.Fatalf("failed %+v", got)
		}
		w.stop()
		var outcome string
		for _, e := range w.outbox(t) {
			if p, _ := e.Payload(); e.Type == events.TypeInvocationCompleted {
				outcome = p.(events.InvocationCompleted).Outcome
			}
		}
		if outcome != invoke.OutcomeError {
			t.Fatalf("invocation.completed outcome %q, want error", outcome)
		}
	})
	t.Run("agent gone before the run", func(t *testing.T) {
		f := &fleet{}
		countingAgent(t, f, http.StatusOK, `{}`)
		w := newAsync(t, f, invoke.AsyncOptions{})
		inv := w.submit(t, `{}`)
		f.mu.Lock()
		f.agents = nil
		f.mu.Unlock()
		if err := w.a.Handler()(t.Context(), w.delivery(t, inv)); err != nil {
			t.Fatal(err)
		}
		got := w.waitStatus(t, inv.ID, invoke.StatusFailed)
		if got.ErrorStatus != 404 || !strings.Contains(got.ErrorDetail, "no live agent") {
			t.Fatalf("failed %+v", got)
		}
	})
}

func TestAsyncSubmitRefusals(t *testing.T) {
	f := &fleet{}
	w := newAsync(t, f, invoke.AsyncOptions{MaxRequestBytes: 8})
	if _, err := w.a.Submit(t.Context(), asyncReq(`{}`)); !errs.Is(err, errs.NotFound) {
		t.Fatalf("no agent: %v, want not_found", err)
	}
	countingAgent(t, f, http.StatusOK, `{}`)
	if _, err := w.a.Submit(t.Context(), asyncReq(`{"text":"too long"}`)); !errs.Is(err, errs.TooLarge) {
		t.Fatalf("long body: %v, want too_large", err)
	}
	if evs := w.outbox(t); len(evs) != 0 {
		t.Fatalf("refused submissions wrote events: %v", evs)
	}
	// The same Idempotency-Key: the same invocation; with another body: refused.
	first := w.submit(t, `{"a":1}`, "Idempotency-Key: k")
	again := w.submit(t, `{"a":1}`, "Idempotency-Key: k")
	if again.ID != first.ID {
		t.Fatalf("a retried submission made %s, want %s", again.ID, first.ID)
	}
	if _, err := w.a.Submit(t.Context(), asyncReq(`{"a":2}`, "Idempotency-Key: k")); !errs.Is(err, errs.Unprocessable) {
		t.Fatalf("key with another body: %v, want unprocessable", err)
	}
	if evs := w.outbox(t); len(evs) != 1 {
		t.Fatalf("%d requested events, want 1", len(evs))
	}
	// Another tenant does not see the invocation.
	if _, err := w.a.Invocation(t.Context(), otherTenant, first.ID); !errs.Is(err, errs.NotFound) {
		t.Fatalf("another tenant's read: %v, want not_found", err)
	}
	if got, err := w.a.Invocation(t.Context(), tenantID, first.ID); err != nil || got.ID != first.ID {
		t.Fatalf("own read: %+v, %v", got, err)
	}
}

// TestAsyncShutdownGivesBack: a call still running when the drain time is over is cancelled and
// its invocation given back (pending, at once reclaimable), not failed.
func TestAsyncShutdownGivesBack(t *testing.T) {
	f := &fleet{}
	entered := make(chan struct{}, 1)
	f.add(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // the server notices the kernel hanging up only once the body is read
		entered <- struct{}{}
		<-r.Context().Done()
	}), "")
	w := newAsync(t, f, invoke.AsyncOptions{DrainTimeout: 10 * time.Millisecond})
	inv := w.submit(t, `{}`)
	if err := w.a.Handler()(t.Context(), w.delivery(t, inv)); err != nil {
		t.Fatal(err)
	}
	<-entered
	w.stop()
	got := w.waitStatus(t, inv.ID, invoke.StatusPending, invoke.StatusCompleted, invoke.StatusFailed)
	if got.Status != invoke.StatusPending || got.Attempts != 1 || got.LeaseUntil.After(w.clock.Now()) {
		t.Fatalf("after shutdown: %+v", got)
	}
	// A stopped engine takes no more work: the delivery is not acked.
	if err := w.a.Handler()(t.Context(), w.delivery(t, inv)); err == nil {
		t.Fatal("a stopped engine acked a delivery")
	}
}

// TestAsyncAbandoned: an invocation whose workers keep dying fails once it used its runs, and the
// agent is not called again.
func TestAsyncAbandoned(t *testing.T) {
	f := &fleet{}
	calls, _ := countingAgent(t, f, http.StatusOK, `{}`)
	w := newAsync(t, f, invoke.AsyncOptions{MaxRuns: 2, LeaseMargin: time.Second}, invoke.Config{Timeout: time.Second})
	inv := w.submit(t, `{}`)
	for range 2 { // two workers claim and die
		now := w.clock.Now()
		if _, err := w.st.ClaimInvocation(t.Context(), tenantID, inv.ID, now, now.Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		w.clock.add(time.Second)
	}
	w.a.Sweep(t.Context())
	got := w.waitStatus(t, inv.ID, invoke.StatusFailed)
	if got.Attempts != 3 || got.ErrorStatus != 502 || !strings.Contains(got.ErrorDetail, "abandoned") || calls.Load() != 0 {
		t.Fatalf("abandoned: %+v, calls %d", got, calls.Load())
	}
}

func TestAsyncHandlerRefusesMalformed(t *testing.T) {
	w := newAsync(t, &fleet{}, invoke.AsyncOptions{})
	h := w.a.Handler()
	p := events.TenantSuspended{Tenant: events.TenantSnapshot{ID: tenantID, Name: "t", Status: "suspended", CreatedAt: time.Now().UTC(), UpdatedAt: time.Now().UTC()}}
	other, err := events.New(p.EventType(), p.EventTenant(), p.EventSubject(), p, time.Now(), "")
	if err != nil {
		t.Fatal(err)
	}
	otherRaw, _ := other.MarshalJSON()
	for name, d := range map[string]bus.Delivery{
		"not an event":   {Message: bus.Message{ID: "evt_1", Tenant: tenantID, Type: string(events.TypeInvocationRequested), Payload: []byte("{")}},
		"another type":   {Message: bus.Message{ID: other.ID, Tenant: tenantID, Type: string(other.Type), Payload: otherRaw}},
		"id disagrees":   {Message: bus.Message{ID: "evt_x", Tenant: tenantID, Type: string(other.Type), Payload: otherRaw}},
		"tenant differs": {Message: bus.Message{ID: other.ID, Tenant: otherTenant, Type: string(other.Type), Payload: otherRaw}},
	} {
		if err := h(t.Context(), d); !bus.IsTerminal(err) {
			t.Errorf("%s: %v, want a terminal error", name, err)
		}
	}
}

func TestAsyncPurge(t *testing.T) {
	f := &fleet{}
	countingAgent(t, f, http.StatusOK, `{}`)
	w := newAsync(t, f, invoke.AsyncOptions{ResultTTL: time.Hour})
	done := w.submit(t, `{}`)
	if err := w.a.Handler()(t.Context(), w.delivery(t, done)); err != nil {
		t.Fatal(err)
	}
	w.waitStatus(t, done.ID, invoke.StatusCompleted)
	waiting := w.submit(t, `{}`)
	w.clock.add(time.Hour)
	n, err := w.a.Purge(t.Context())
	if err != nil || n != 1 {
		t.Fatalf("Purge: %d, %v; want 1", n, err)
	}
	if _, err := w.a.Invocation(t.Context(), tenantID, done.ID); !errs.Is(err, errs.NotFound) {
		t.Fatalf("purged invocation: %v", err)
	}
	w.waitStatus(t, waiting.ID, invoke.StatusPending) // not finished: kept
}

// TestCompletionRecords: a completion's two records, read back as events.
func TestCompletionRecords(t *testing.T) {
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.FixedZone("x", 3600))
	recs, err := invoke.CompletionRecords(invoke.Completion{
		InvocationID: "inv_1", Tenant: tenantID, Capability: "text.summarize", AgentID: "agt_1", RequestID: "req_1",
		Status: 200, Outcome: invoke.OutcomeOK, Attempts: 2, RequestBytes: 3, ResponseBytes: 4, StartedAt: start,
		Duration: 1500 * time.Microsecond, TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	})
	if err != nil || len(recs) != 2 {
		t.Fatalf("CompletionRecords: %v, %v", recs, err)
	}
	var evs []events.Event
	for _, r := range recs {
		if err := r.Validate(); err != nil {
			t.Errorf("record %s: %v", r.Type, err)
		}
		e, err := events.Parse(r.Payload)
		if err != nil {
			t.Fatalf("record %s does not parse: %v", r.Type, err)
		}
		if e.ID != r.ID || e.Type != r.Type || e.Tenant != r.Tenant || e.Subject != r.Subject || !e.Time.Equal(r.CreatedAt) {
			t.Errorf("record %+v disagrees with its event %+v", r, e)
		}
		evs = append(evs, e)
	}
	if evs[0].Type != events.TypeInvocationCompleted || evs[1].Type != events.TypeBillingUsage {
		t.Fatalf("types %s, %s", evs[0].Type, evs[1].Type)
	}
	for _, e := range evs {
		if !e.Time.Equal(start.Add(1500*time.Microsecond)) || e.TraceParent == "" || e.Tenant != tenantID {
			t.Errorf("%s envelope %+v", e.Type, e)
		}
	}
	p, _ := evs[0].Payload()
	if c := p.(events.InvocationCompleted); c.DurationMs != 1.5 || c.Async || c.Attempts != 2 || !c.StartedAt.Equal(start) || c.StartedAt.Location() != time.UTC {
		t.Errorf("completed %+v", c)
	}
	p, _ = evs[1].Payload()
	if u := p.(events.BillingUsage); u.Source != events.UsageSourceInvocation || u.AgentID != "agt_1" || u.ResponseBytes != 4 || u.DurationMs != 1.5 {
		t.Errorf("usage %+v", u)
	}
	if _, err := invoke.CompletionRecords(invoke.Completion{Tenant: tenantID}); err == nil {
		t.Error("an incomplete completion made records")
	}
}

// TestAsyncWorkersBusy: with every worker busy, a delivery that waits in vain is acked and its
// invocation stays pending, for the sweeper to run once a worker is free.
func TestAsyncWorkersBusy(t *testing.T) {
	f := &fleet{}
	release := make(chan struct{})
	var calls atomic.Int32
	f.add(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if calls.Add(1) == 1 {
			<-release
		}
	}), "")
	w := newAsync(t, f, invoke.AsyncOptions{Workers: 1, PendingGrace: time.Minute})
	busy, waiting := w.submit(t, `{}`), w.submit(t, `{}`)
	h := w.a.Handler()
	if err := h(t.Context(), w.delivery(t, busy)); err != nil {
		t.Fatal(err)
	}
	w.waitStatus(t, busy.ID, invoke.StatusRunning)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := h(ctx, w.delivery(t, waiting)); err != nil {
		t.Fatalf("a delivery finding no worker: %v, want an ack", err)
	}
	if got := w.waitStatus(t, waiting.ID, invoke.StatusPending); got.Attempts != 0 {
		t.Fatalf("claimed without a worker: %+v", got)
	}
	close(release)
	w.waitStatus(t, busy.ID, invoke.StatusCompleted)
	w.clock.add(time.Minute)
	deadline := time.Now().Add(30 * time.Second)
	for {
		w.a.Sweep(t.Context()) // the busy call's worker may not be free yet: sweep until it is
		if inv, _ := w.a.Invocation(t.Context(), tenantID, waiting.ID); inv.Status != invoke.StatusPending || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	w.waitStatus(t, waiting.ID, invoke.StatusCompleted)
}
