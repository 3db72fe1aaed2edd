package billing_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/billing"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/events"
)

// TestRecordRefusesInvalid: a usage that cannot be a valid event is refused at once and counted,
// and nothing of it reaches the outbox.
func TestRecordRefusesInvalid(t *testing.T) {
	s := openSQLite(t)
	m, opts := newMetrics(t)
	r := newRecorder(t, s, opts)
	tests := map[string]func(u *billing.Usage){
		"no tenant":                       func(u *billing.Usage) { u.Tenant = "" },
		"tenant with a dot":               func(u *billing.Usage) { u.Tenant = "ten.x" },
		"unknown source":                  func(u *billing.Usage) { u.Source = "batch" },
		"gateway without a route":         func(u *billing.Usage) { u.Source, u.Route = billing.SourceGateway, "" },
		"invocation without a capability": func(u *billing.Usage) { u.Source, u.Capability = billing.SourceInvocation, "" },
		"status 0":                        func(u *billing.Usage) { u.Status = 0 },
		"negative request bytes":          func(u *billing.Usage) { u.RequestBytes = -1 },
		"negative response bytes":         func(u *billing.Usage) { u.ResponseBytes = -1 },
		"negative duration":               func(u *billing.Usage) { u.Duration = -time.Nanosecond },
		"no start":                        func(u *billing.Usage) { u.StartedAt = time.Time{} },
		"request id with a newline":       func(u *billing.Usage) { u.RequestID = "req\n" },
		"malformed traceparent":           func(u *billing.Usage) { u.TraceParent = "00-xyz" },
	}
	for name, change := range tests {
		u := usage(2)
		change(&u)
		if _, err := u.Event(); !errs.Is(err, errs.Invalid) {
			t.Errorf("%s: Event: %v, want errs.Invalid", name, err)
		}
		if r.Record(u) {
			t.Errorf("%s: Record accepted it", name)
		}
	}
	if got := m.counter(t, "nops_billing_usage_dropped_total", billing.ReasonInvalid); got != int64(len(tests)) {
		t.Errorf("dropped{reason=invalid} = %d, want %d", got, len(tests))
	}
	if err := run(t, r)(); err != nil {
		t.Errorf("Run: %v", err)
	}
	checkOutbox(t, s, nil)
}

func TestOptionsRefused(t *testing.T) {
	s := openSQLite(t)
	for name, opts := range map[string]billing.Options{
		"negative batch":         {Batch: -1},
		"negative interval":      {Interval: -time.Second},
		"negative queue":         {Queue: -1},
		"negative flush timeout": {FlushTimeout: -time.Second},
		"backoff max below min":  {BackoffInitial: time.Second, BackoffMax: time.Millisecond},
	} {
		if _, err := billing.NewRecorder(s, opts); !errs.Is(err, errs.Invalid) {
			t.Errorf("%s: NewRecorder: %v, want errs.Invalid", name, err)
		}
	}
	if _, err := billing.NewRecorder(nil, billing.Options{}); err == nil {
		t.Error("NewRecorder without a store succeeded")
	}
}

// TestBatches: records become exactly one valid event each, written in transactions of at most
// Batch records, and the partial batch left when Run stops is written too.
func TestBatches(t *testing.T) {
	eachBackend(t, func(t *testing.T, real realStore) {
		s := &txStore{realStore: real}
		m, opts := newMetrics(t)
		var enqueued atomic.Int64
		// An Interval this long never fires in the test: batches are written when full, or at
		// shutdown, so the transaction count is exact.
		opts.Batch, opts.Interval, opts.Enqueued = 64, time.Hour, func() { enqueued.Add(1) }
		r := newRecorder(t, s, opts)
		var want []billing.Usage
		for n := range 150 {
			u := usage(n)
			if !r.Record(u) {
				t.Fatalf("Record(%d) refused", n)
			}
			want = append(want, u)
		}
		stop := run(t, r)
		waitFor(t, "two full batches", func() bool { return len(s.sizes()) == 2 })
		if err := stop(); err != nil {
			t.Fatalf("Run: %v", err)
		}
		if diff := cmp.Diff([]int{64, 64, 22}, s.sizes()); diff != "" {
			t.Errorf("records per transaction (-want +got):\n%s", diff)
		}
		checkOutbox(t, real, want)
		if got := enqueued.Load(); got != 3 {
			t.Errorf("Enqueued called %d times, want once per batch (3)", got)
		}
		if got := m.counter(t, "nops_billing_usage_recorded_total", ""); got != 150 {
			t.Errorf("recorded_total = %d, want 150", got)
		}
		if got := m.counter(t, "nops_billing_usage_dropped_total", ""); got != 0 {
			t.Errorf("dropped_total = %d, want 0", got)
		}
		// Records are written in the order they were queued.
		recs := outbox(t, real)
		for i, rec := range recs {
			e, err := events.Parse(rec.Payload)
			if err != nil {
				t.Fatal(err)
			}
			p, _ := e.Payload()
			if got := p.(events.BillingUsage).RequestID; got != want[i].RequestID {
				t.Fatalf("record %d is of %s, want %s", i, got, want[i].RequestID)
			}
		}
	})
}

// TestInterval: a batch that does not fill is written after Interval, while Run goes on.
func TestInterval(t *testing.T) {
	eachBackend(t, func(t *testing.T, real realStore) {
		s := &txStore{realStore: real}
		r := newRecorder(t, s, billing.Options{})
		run(t, r)
		want := []billing.Usage{usage(1), usage(2), usage(3)}
		for _, u := range want {
			if !r.Record(u) {
				t.Fatal("Record refused")
			}
		}
		waitFor(t, "the records written", func() bool { return len(outbox(t, real)) == len(want) })
		checkOutbox(t, real, want)
	})
}

// TestQueueFull: beyond Queue records waiting, Record refuses without blocking and counts the
// drop; what was queued is written.
func TestQueueFull(t *testing.T) {
	s := openSQLite(t)
	m, opts := newMetrics(t)
	opts.Queue = 3
	r := newRecorder(t, s, opts)
	var want []billing.Usage
	for n := range 5 {
		ok := r.Record(usage(n))
		if ok != (n < 3) {
			t.Errorf("Record(%d) = %v, want %v", n, ok, n < 3)
		}
		if ok {
			want = append(want, usage(n))
		}
	}
	if got := r.Queued(); got != 3 {
		t.Errorf("Queued = %d, want 3", got)
	}
	if got := m.counter(t, "nops_billing_usage_dropped_total", billing.ReasonQueueFull); got != 2 {
		t.Errorf("dropped{reason=queue_full} = %d, want 2", got)
	}
	if err := run(t, r)(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	checkOutbox(t, s, want)
}

// TestFlushOnCancel: records queued when Run's context ends are written before Run returns, and
// Record refuses from then on.
func TestFlushOnCancel(t *testing.T) {
	eachBackend(t, func(t *testing.T, real realStore) {
		m, opts := newMetrics(t)
		opts.Interval, opts.Batch = time.Hour, 4
		r := newRecorder(t, real, opts)
		stop := run(t, r)
		var want []billing.Usage
		for n := range 10 {
			if !r.Record(usage(n)) {
				t.Fatalf("Record(%d) refused", n)
			}
			want = append(want, usage(n))
		}
		if err := stop(); err != nil {
			t.Fatalf("Run: %v", err)
		}
		checkOutbox(t, real, want)
		if r.Record(usage(99)) {
			t.Error("Record accepted a usage after Run returned")
		}
		if got := m.counter(t, "nops_billing_usage_dropped_total", billing.ReasonStopped); got != 1 {
			t.Errorf("dropped{reason=stopped} = %d, want 1", got)
		}
		if err := r.Run(context.Background()); err == nil {
			t.Error("a second Run succeeded")
		}
	})
}

// TestRetry: while transactions fail, the batch is retried with backoff and nothing is written
// or lost; once the database recovers every record is written exactly once. Both a transaction
// that never reached the database and one that rolled back are retried.
func TestRetry(t *testing.T) {
	for name, mode := range map[string]int32{"unreachable": down, "rolled back": failedBatch} {
		t.Run(name, func(t *testing.T) {
			eachBackend(t, func(t *testing.T, real realStore) {
				s := &txStore{realStore: real}
				s.mode.Store(mode)
				m, opts := newMetrics(t)
				opts.BackoffInitial, opts.BackoffMax = time.Millisecond, 5*time.Millisecond
				r := newRecorder(t, s, opts)
				run(t, r)
				var want []billing.Usage
				for n := range 5 {
					if !r.Record(usage(n)) {
						t.Fatalf("Record(%d) refused", n)
					}
					want = append(want, usage(n))
				}
				waitFor(t, "three failed attempts", func() bool { return s.attemptCount() >= 3 })
				if recs := outbox(t, real); len(recs) != 0 {
					t.Fatalf("%d records written while the database fails", len(recs))
				}
				s.mode.Store(healthy)
				waitFor(t, "every record written", func() bool { return len(outbox(t, real)) == len(want) })
				checkOutbox(t, real, want)
				if got := m.counter(t, "nops_billing_usage_batch_failures_total", ""); got < 3 {
					t.Errorf("batch_failures_total = %d, want at least 3", got)
				}
				if got := m.counter(t, "nops_billing_usage_recorded_total", ""); got != int64(len(want)) {
					t.Errorf("recorded_total = %d, want %d", got, len(want))
				}
			})
		})
	}
}

// TestLostCommit: a transaction that committed but was reported as failed is retried with the
// same event ids, found committed, and not written twice.
func TestLostCommit(t *testing.T) {
	eachBackend(t, func(t *testing.T, real realStore) {
		s := &txStore{realStore: real}
		s.mode.Store(lostCommit)
		m, opts := newMetrics(t)
		var enqueued atomic.Int64
		opts.Interval, opts.BackoffInitial, opts.BackoffMax = time.Hour, time.Millisecond, time.Millisecond
		opts.Enqueued = func() { enqueued.Add(1) }
		r := newRecorder(t, s, opts)
		var want []billing.Usage
		for n := range 7 {
			if !r.Record(usage(n)) {
				t.Fatalf("Record(%d) refused", n)
			}
			want = append(want, usage(n))
		}
		if err := run(t, r)(); err != nil {
			t.Fatalf("Run: %v", err)
		}
		checkOutbox(t, real, want)
		if diff := cmp.Diff([]int{7}, s.sizes()); diff != "" {
			t.Errorf("records per committed transaction (-want +got):\n%s", diff)
		}
		if got := s.attemptCount(); got != 2 {
			t.Errorf("%d transactions tried, want 2 (the lost commit and its retry)", got)
		}
		if got := m.counter(t, "nops_billing_usage_recorded_total", ""); got != 7 {
			t.Errorf("recorded_total = %d, want 7", got)
		}
		if got := m.counter(t, "nops_billing_usage_batch_failures_total", ""); got != 1 {
			t.Errorf("batch_failures_total = %d, want 1", got)
		}
		if got := enqueued.Load(); got != 1 {
			t.Errorf("Enqueued called %d times, want 1", got)
		}
	})
}

// TestShutdownTimeout: when the database stays down at shutdown, Run gives up after
// FlushTimeout, says how many records were lost and counts them.
func TestShutdownTimeout(t *testing.T) {
	s := &txStore{realStore: openSQLite(t)}
	s.mode.Store(down)
	m, opts := newMetrics(t)
	opts.FlushTimeout, opts.BackoffInitial, opts.BackoffMax = 50*time.Millisecond, time.Millisecond, 5*time.Millisecond
	opts.Batch, opts.Interval = 3, time.Hour
	r := newRecorder(t, s, opts)
	stop := run(t, r)
	for n := range 4 {
		if !r.Record(usage(n)) {
			t.Fatalf("Record(%d) refused", n)
		}
	}
	waitFor(t, "a failed attempt", func() bool { return s.attemptCount() >= 1 })
	err := stop()
	if err == nil || !strings.Contains(err.Error(), "4 usage records not written") {
		t.Errorf("Run: %v, want an error counting 4 lost records", err)
	}
	if got := m.counter(t, "nops_billing_usage_dropped_total", billing.ReasonShutdown); got != 4 {
		t.Errorf("dropped{reason=shutdown} = %d, want 4", got)
	}
	if got := r.Queued(); got != 0 {
		t.Errorf("Queued = %d after Run returned, want 0", got)
	}
}

// TestRecordDuringShutdown: with Record called from many goroutines before, while and after Run
// stops, every usage Record accepted is written and none it refused is.
func TestRecordDuringShutdown(t *testing.T) {
	s := openSQLite(t)
	r := newRecorder(t, s, billing.Options{Batch: 16, Queue: 64})
	stop := run(t, r)
	const writers = 8
	accepted := make([][]billing.Usage, writers)
	acceptedAfterStop := make([]bool, writers)
	quit := make(chan struct{})
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := 0; ; i++ {
				u := usage(w*1_000_000 + i)
				select {
				case <-quit:
					// Run has returned: Record must refuse.
					acceptedAfterStop[w] = r.Record(u)
					return
				default:
				}
				if r.Record(u) {
					accepted[w] = append(accepted[w], u)
				}
			}
		})
	}
	waitFor(t, "records written while Record is called", func() bool { return len(outbox(t, s)) >= 32 })
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	close(quit)
	wg.Wait()
	var want []billing.Usage
	for w, a := range accepted {
		want = append(want, a...)
		if acceptedAfterStop[w] {
			t.Errorf("writer %d: Record accepted a usage after Run returned", w)
		}
	}
	checkOutbox(t, s, want)
}

// TestUsageEvent pins the mapping of a Usage to its event.
func TestUsageEvent(t *testing.T) {
	u := usage(5)
	e, err := u.Event()
	if err != nil {
		t.Fatalf("Event: %v", err)
	}
	want := events.BillingUsage{
		Tenant: tenant, AgentID: "agt_0005", Source: "invocation", Capability: "text.summarize",
		RequestID: "req_000005", Status: 202, RequestBytes: 50, ResponseBytes: 500,
		DurationMs: 0.005007, StartedAt: time.Date(2025, 3, 14, 15, 9, 26, 540897932, time.UTC),
	}
	if diff := cmp.Diff(want, u.Payload()); diff != "" {
		t.Errorf("Payload (-want +got):\n%s", diff)
	}
	if e.Subject != "tenants/ten_billing/usage" || e.Source != "/nops/tenants/ten_billing" ||
		!e.Time.Equal(want.StartedAt.Add(5007*time.Nanosecond)) || !strings.HasPrefix(e.ID, "evt_") ||
		e.TraceParent != u.TraceParent {
		t.Errorf("event %+v", e)
	}
	if err := loadSchemas(t).Validate(mustMarshal(t, e)); err != nil {
		t.Errorf("schema: %v", err)
	}
}

func mustMarshal(t *testing.T, e events.Event) []byte {
	t.Helper()
	b, err := e.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return b
}
