package bus_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/nops-kernel/nops/internal/bus"
)

// fakeSettler records how Dispatch settled a delivery; its methods fail when told to.
type fakeSettler struct {
	settleErrs
	mu          sync.Mutex
	calls       []string // "ack", "nak 1s", "term"
	ctxErrs     []error  // the context's Err at each call
	deadlineSet bool     // the last call's context had a deadline
}

// settleErrs are the errors a fakeSettler's methods return.
type settleErrs struct{ ackErr, nakErr, termErr error }

func (s *fakeSettler) record(ctx context.Context, call string, err error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, call)
	s.ctxErrs = append(s.ctxErrs, ctx.Err())
	_, s.deadlineSet = ctx.Deadline()
	return err
}

func (s *fakeSettler) Ack(ctx context.Context) error { return s.record(ctx, "ack", s.ackErr) }
func (s *fakeSettler) Nak(ctx context.Context, d time.Duration) error {
	return s.record(ctx, "nak "+d.String(), s.nakErr)
}
func (s *fakeSettler) Term(ctx context.Context) error { return s.record(ctx, "term", s.termErr) }

// fakeDLQ records the dead letters written; it fails when err is set.
type fakeDLQ struct {
	mu  sync.Mutex
	dls []bus.DeadLetter
	err error
}

func (q *fakeDLQ) AddDeadLetter(_ context.Context, dl bus.DeadLetter) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err != nil {
		return q.err
	}
	q.dls = append(q.dls, dl)
	return nil
}

var (
	storedAt  = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	testCfg   = bus.ConsumerConfig{Name: "proj", MaxDeliveries: 4, Backoff: bus.Backoff{Initial: time.Second, Max: 10 * time.Second}, AckWait: time.Minute, Concurrency: 1}
	errBoom   = errors.New("boom")
	okHandler = func(context.Context, bus.Delivery) error { return nil }
)

func delivery(attempt int) bus.Delivery {
	return bus.Delivery{Message: validMessage(), Consumer: testCfg.Name, Attempt: attempt, StoredAt: storedAt, Position: "42"}
}

// failing returns a handler that fails with err and counts its calls.
func failing(err error, calls *int) bus.Handler {
	return func(context.Context, bus.Delivery) error {
		*calls++
		return err
	}
}

// dispatchCase is one delivery's handler result and how Dispatch (and DispatchBatch, for each
// delivery) must settle it.
type dispatchCase struct {
	name      string
	attempt   int
	handler   func(calls *int) bus.Handler
	settler   settleErrs
	dlqErr    error
	want      bus.Outcome
	calls     []string
	handled   int    // handler calls
	deadAfter int    // Attempts of the dead letter written, 0 none
	reason    string // in the dead letter's Reason
}

func dispatchCases() []dispatchCase {
	return []dispatchCase{
		{name: "success acks", attempt: 1, handler: func(n *int) bus.Handler { return failing(nil, n) },
			want: bus.Acked, calls: []string{"ack"}, handled: 1},
		{name: "success on the last attempt acks", attempt: 4, handler: func(n *int) bus.Handler { return failing(nil, n) },
			want: bus.Acked, calls: []string{"ack"}, handled: 1},
		{name: "failure naks with the backoff of attempt 1", attempt: 1, handler: func(n *int) bus.Handler { return failing(errBoom, n) },
			want: bus.Retried, calls: []string{"nak 1s"}, handled: 1},
		{name: "failure naks with the backoff of attempt 3", attempt: 3, handler: func(n *int) bus.Handler { return failing(errBoom, n) },
			want: bus.Retried, calls: []string{"nak 4s"}, handled: 1},
		{name: "retry after naks with its delay", attempt: 2, handler: func(n *int) bus.Handler { return failing(bus.RetryAfter(errBoom, 90*time.Second), n) },
			want: bus.Retried, calls: []string{"nak 1m30s"}, handled: 1},
		{name: "failure on the last attempt dead-letters", attempt: 4, handler: func(n *int) bus.Handler { return failing(errBoom, n) },
			want: bus.DeadLettered, calls: []string{"term"}, handled: 1, deadAfter: 4, reason: "boom"},
		{name: "retry after on the last attempt dead-letters", attempt: 4, handler: func(n *int) bus.Handler { return failing(bus.RetryAfter(errBoom, time.Hour), n) },
			want: bus.DeadLettered, calls: []string{"term"}, handled: 1, deadAfter: 4, reason: "boom"},
		{name: "terminal dead-letters at once", attempt: 1, handler: func(n *int) bus.Handler { return failing(bus.Terminal(errors.New("bad schema")), n) },
			want: bus.DeadLettered, calls: []string{"term"}, handled: 1, deadAfter: 1, reason: "bad schema"},
		{name: "beyond max deliveries dead-letters without the handler", attempt: 5, handler: func(n *int) bus.Handler { return failing(nil, n) },
			want: bus.DeadLettered, calls: []string{"term"}, handled: 0, deadAfter: 5, reason: "delivered 5 times"},
		{name: "panic is a failure", attempt: 1, handler: func(n *int) bus.Handler {
			return func(context.Context, bus.Delivery) error { *n++; panic("kaboom") }
		}, want: bus.Retried, calls: []string{"nak 1s"}, handled: 1},
		{name: "panic on the last attempt dead-letters with the panic", attempt: 4, handler: func(n *int) bus.Handler {
			return func(context.Context, bus.Delivery) error { *n++; panic("kaboom") }
		}, want: bus.DeadLettered, calls: []string{"term"}, handled: 1, deadAfter: 4, reason: "handler panicked: kaboom"},
		{name: "dead letter write failure naks instead of term", attempt: 4, handler: func(n *int) bus.Handler { return failing(errBoom, n) },
			dlqErr: errors.New("dlq down"), want: bus.Unsettled, calls: []string{"nak 8s"}, handled: 1},
		{name: "terminal with the dead letter write failing naks", attempt: 1, handler: func(n *int) bus.Handler { return failing(bus.Terminal(errBoom), n) },
			dlqErr: errors.New("dlq down"), want: bus.Unsettled, calls: []string{"nak 1s"}, handled: 1},
		{name: "ack failure is unsettled", attempt: 1, handler: func(n *int) bus.Handler { return failing(nil, n) },
			settler: settleErrs{ackErr: errors.New("conn lost")}, want: bus.Unsettled, calls: []string{"ack"}, handled: 1},
		{name: "nak failure is unsettled", attempt: 1, handler: func(n *int) bus.Handler { return failing(errBoom, n) },
			settler: settleErrs{nakErr: errors.New("conn lost")}, want: bus.Unsettled, calls: []string{"nak 1s"}, handled: 1},
		{name: "term failure is unsettled but the dead letter is written", attempt: 4, handler: func(n *int) bus.Handler { return failing(errBoom, n) },
			settler: settleErrs{termErr: errors.New("conn lost")}, want: bus.Unsettled, calls: []string{"term"}, handled: 1, deadAfter: 4, reason: "boom"},
	}
}

func TestDispatchOutcomes(t *testing.T) {
	cases := dispatchCases()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := &fakeSettler{settleErrs: c.settler}
			q := &fakeDLQ{err: c.dlqErr}
			var hooked []bus.DeadLetter
			cfg := testCfg
			cfg.OnDeadLetter = func(_ context.Context, dl bus.DeadLetter) { hooked = append(hooked, dl) }
			handled := 0
			before := time.Now()
			got := bus.Dispatch(t.Context(), delivery(c.attempt), s, c.handler(&handled), cfg, q, nil)
			after := time.Now()
			if got != c.want {
				t.Errorf("outcome = %s, want %s", got, c.want)
			}
			if diff := cmp.Diff(c.calls, s.calls); diff != "" {
				t.Errorf("settler calls (-want +got):\n%s", diff)
			}
			if handled != c.handled {
				t.Errorf("handler called %d times, want %d", handled, c.handled)
			}
			if c.deadAfter == 0 {
				if len(q.dls) != 0 || len(hooked) != 0 {
					t.Fatalf("dead letters written %v, hooked %v; want none", q.dls, hooked)
				}
				return
			}
			if len(q.dls) != 1 {
				t.Fatalf("%d dead letters written, want 1", len(q.dls))
			}
			dl := q.dls[0]
			d := delivery(c.attempt)
			want := bus.DeadLetter{ID: bus.DeadLetterID(d.Consumer, d.ID), Message: d.Message, Consumer: d.Consumer,
				Attempts: c.deadAfter, StoredAt: storedAt, Source: "42"}
			if diff := cmp.Diff(want, dl, cmpopts.IgnoreFields(bus.DeadLetter{}, "Reason", "FailedAt")); diff != "" {
				t.Errorf("dead letter (-want +got):\n%s", diff)
			}
			if !strings.Contains(dl.Reason, c.reason) {
				t.Errorf("Reason = %q, want it to contain %q", dl.Reason, c.reason)
			}
			if dl.FailedAt.Location() != time.UTC || dl.FailedAt.Before(before.Truncate(time.Second)) || dl.FailedAt.After(after) {
				t.Errorf("FailedAt = %s, want the time of the failure in UTC", dl.FailedAt)
			}
			if diff := cmp.Diff([]bus.DeadLetter{dl}, hooked); diff != "" {
				t.Errorf("OnDeadLetter calls (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDispatchBatchOutcomes: DispatchBatch settles each delivery of a batch by its own result
// exactly as Dispatch does; its neighbours in the batch, which succeed, are acknowledged — unless
// the handler panics, which fails the whole batch.
func TestDispatchBatchOutcomes(t *testing.T) {
	for _, c := range dispatchCases() {
		t.Run(c.name, func(t *testing.T) {
			d := delivery(c.attempt)
			left, right := delivery(1), delivery(1)
			left.ID, right.ID = "evt_left", "evt_right"
			ss := []*fakeSettler{{}, {settleErrs: c.settler}, {}}
			q := &fakeDLQ{err: c.dlqErr}
			var hooked []bus.DeadLetter
			cfg := testCfg
			cfg.OnDeadLetter = func(_ context.Context, dl bus.DeadLetter) { hooked = append(hooked, dl) }
			handled, calls := 0, 0
			h := c.handler(&handled)
			var given []string
			bh := func(ctx context.Context, ds []bus.Delivery) []error {
				calls++
				out := make([]error, len(ds))
				for i, x := range ds {
					given = append(given, x.ID)
					if x.ID == d.ID {
						out[i] = h(ctx, x)
					}
				}
				return out
			}
			got := bus.DispatchBatch(t.Context(), []bus.Delivery{left, d, right}, []bus.Settler{ss[0], ss[1], ss[2]}, bh, cfg, q, nil)
			neighbour := bus.Acked
			neighbourCalls := []string{"ack"}
			if strings.HasPrefix(c.name, "panic") {
				neighbour, neighbourCalls = bus.Retried, []string{"nak 1s"}
			}
			if want := []bus.Outcome{neighbour, c.want, neighbour}; !slices.Equal(got, want) {
				t.Errorf("outcomes = %v, want %v", got, want)
			}
			for i, want := range [][]string{neighbourCalls, c.calls, neighbourCalls} {
				if diff := cmp.Diff(want, ss[i].calls); diff != "" {
					t.Errorf("settler %d calls (-want +got):\n%s", i, diff)
				}
			}
			if handled != c.handled || calls != 1 {
				t.Errorf("case handler called %d times in %d batch calls, want %d in 1", handled, calls, c.handled)
			}
			wantGiven := []string{left.ID, d.ID, right.ID}
			if c.handled == 0 {
				wantGiven = []string{left.ID, right.ID} // beyond max deliveries: not given to the handler
			}
			if strings.HasPrefix(c.name, "panic") {
				wantGiven = wantGiven[:2] // the panic ended the call there
			}
			if !slices.Equal(given, wantGiven) {
				t.Errorf("handler given %v, want %v", given, wantGiven)
			}
			if c.deadAfter == 0 {
				if len(q.dls) != 0 || len(hooked) != 0 {
					t.Fatalf("dead letters written %v, hooked %v; want none", q.dls, hooked)
				}
				return
			}
			if len(q.dls) != 1 || q.dls[0].Attempts != c.deadAfter || q.dls[0].Message.ID != d.ID || !strings.Contains(q.dls[0].Reason, c.reason) {
				t.Fatalf("dead letters %+v, want one of %s after %d attempts with reason %q", q.dls, d.ID, c.deadAfter, c.reason)
			}
			if diff := cmp.Diff(q.dls, hooked); diff != "" {
				t.Errorf("OnDeadLetter calls (-want +got):\n%s", diff)
			}
		})
	}
}

// A batch handler returning the wrong number of results fails every delivery of the batch.
func TestDispatchBatchWrongResultCount(t *testing.T) {
	ds := []bus.Delivery{delivery(1), delivery(1)}
	ds[1].ID = "evt_other"
	ss := []*fakeSettler{{}, {}}
	bh := func(context.Context, []bus.Delivery) []error { return []error{nil} }
	got := bus.DispatchBatch(t.Context(), ds, []bus.Settler{ss[0], ss[1]}, bh, testCfg, &fakeDLQ{}, nil)
	if want := []bus.Outcome{bus.Retried, bus.Retried}; !slices.Equal(got, want) {
		t.Errorf("outcomes = %v, want %v", got, want)
	}
}

// TestDispatchBatchTrace: each delivery of a batch has its consumer span, a child of its own
// publisher's traceparent, with its own outcome.
func TestDispatchBatchTrace(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	ins, err := bus.NewInstruments(bus.InstrumentOptions{Tracer: tp.Tracer("test")})
	if err != nil {
		t.Fatalf("NewInstruments: %v", err)
	}
	a, b := delivery(1), delivery(1)
	b.ID = "evt_b"
	b.TraceParent = "00-11111111111111111111111111111111-2222222222222222-01"
	bh := func(context.Context, []bus.Delivery) []error { return []error{nil, errBoom} }
	bus.DispatchBatch(t.Context(), []bus.Delivery{a, b}, []bus.Settler{&fakeSettler{}, &fakeSettler{}}, bh, testCfg, &fakeDLQ{}, ins)
	spans := rec.Ended()
	if len(spans) != 2 {
		t.Fatalf("%d spans ended, want 2", len(spans))
	}
	want := []struct{ trace, parent, outcome string }{
		{"4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", string(bus.Acked)},
		{"11111111111111111111111111111111", "2222222222222222", string(bus.Retried)},
	}
	for i, sp := range spans {
		var outcome string
		for _, kv := range sp.Attributes() {
			if kv.Key == "nops.bus.outcome" {
				outcome = kv.Value.AsString()
			}
		}
		if sp.Parent().TraceID().String() != want[i].trace || sp.Parent().SpanID().String() != want[i].parent || outcome != want[i].outcome {
			t.Errorf("span %d: parent %s/%s outcome %q, want %+v", i, sp.Parent().TraceID(), sp.Parent().SpanID(), outcome, want[i])
		}
	}
}

// TestDispatchHandlerContext: the handler's context ends with AckWait; settling uses a context
// of its own, live even when the caller's has ended (shutdown must still settle).
func TestDispatchHandlerContext(t *testing.T) {
	var deadline time.Time
	var hasDeadline bool
	h := func(ctx context.Context, _ bus.Delivery) error {
		deadline, hasDeadline = ctx.Deadline()
		return nil
	}
	before := time.Now()
	s := &fakeSettler{}
	bus.Dispatch(t.Context(), delivery(1), s, h, testCfg, &fakeDLQ{}, nil)
	if !hasDeadline || deadline.Before(before.Add(testCfg.AckWait)) || deadline.After(time.Now().Add(testCfg.AckWait)) {
		t.Errorf("handler deadline = %s (set %v), want AckWait (%s) after the dispatch", deadline, hasDeadline, testCfg.AckWait)
	}
	if !s.deadlineSet {
		t.Errorf("Ack was called without a deadline")
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	s = &fakeSettler{}
	got := bus.Dispatch(ctx, delivery(1), s, func(ctx context.Context, _ bus.Delivery) error { return ctx.Err() }, testCfg, &fakeDLQ{}, nil)
	if got != bus.Retried || len(s.ctxErrs) != 1 || s.ctxErrs[0] != nil {
		t.Errorf("with the caller's context ended: outcome %s, settle context errors %v; want retried with a live context", got, s.ctxErrs)
	}
}

// TestDispatchTrace: the handler runs in a consumer span that is a child of the publisher's
// traceparent, marked as an error when the handler fails.
func TestDispatchTrace(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	ins, err := bus.NewInstruments(bus.InstrumentOptions{Tracer: tp.Tracer("test")})
	if err != nil {
		t.Fatalf("NewInstruments: %v", err)
	}
	var inHandler trace.SpanContext
	var injected string
	h := func(ctx context.Context, _ bus.Delivery) error {
		inHandler = trace.SpanContextFromContext(ctx)
		injected = bus.InjectTraceParent(ctx)
		return errBoom
	}
	d := delivery(1)
	bus.Dispatch(t.Context(), d, &fakeSettler{}, h, testCfg, &fakeDLQ{}, ins)

	spans := rec.Ended()
	if len(spans) != 1 {
		t.Fatalf("%d spans ended, want 1", len(spans))
	}
	sp := spans[0]
	if got := sp.Parent().TraceID().String(); got != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("span parent trace %s, want the publisher's", got)
	}
	if got := sp.Parent().SpanID().String(); got != "00f067aa0ba902b7" {
		t.Errorf("span parent %s, want the publisher's span", got)
	}
	if sp.SpanKind() != trace.SpanKindConsumer || sp.Name() != "consume proj" {
		t.Errorf("span %q of kind %s, want consume proj of kind consumer", sp.Name(), sp.SpanKind())
	}
	if sp.Status().Code != codes.Error {
		t.Errorf("span status %v, want an error for a failed handler", sp.Status())
	}
	attrs := map[attribute.Key]attribute.Value{}
	for _, kv := range sp.Attributes() {
		attrs[kv.Key] = kv.Value
	}
	for k, want := range map[attribute.Key]string{
		"messaging.consumer.group.name": "proj", "messaging.message.id": d.ID, "nops.tenant": d.Tenant,
		"cloudevents.event_type": d.Type, "nops.bus.outcome": string(bus.Retried),
	} {
		if got := attrs[k].AsString(); got != want {
			t.Errorf("span attribute %s = %q, want %q", k, got, want)
		}
	}
	if inHandler.SpanID() != sp.SpanContext().SpanID() {
		t.Errorf("the handler's context does not carry the consumer span")
	}
	if want := "00-4bf92f3577b34da6a3ce929d0e0e4736-" + sp.SpanContext().SpanID().String() + "-01"; injected != want {
		t.Errorf("InjectTraceParent in the handler = %q, want %q", injected, want)
	}
	if got := bus.InjectTraceParent(t.Context()); got != "" {
		t.Errorf("InjectTraceParent without a span = %q, want empty", got)
	}
}

// collect reads every metric of reader into name → data points.
func collect(t *testing.T, reader *sdkmetric.ManualReader) map[string]metricdata.Aggregation {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(t.Context(), &rm); err != nil {
		t.Fatalf("Collect: %v", err)
	}
	out := map[string]metricdata.Aggregation{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			out[m.Name] = m.Data
		}
	}
	return out
}

// key renders a point's attributes as "k=v,k=v".
func key(set attribute.Set) string {
	var parts []string
	for _, kv := range set.ToSlice() {
		parts = append(parts, string(kv.Key)+"="+kv.Value.String())
	}
	return strings.Join(parts, ",")
}

func histCounts(t *testing.T, data metricdata.Aggregation) map[string]uint64 {
	t.Helper()
	h, ok := data.(metricdata.Histogram[float64])
	if !ok {
		t.Fatalf("not a float64 histogram: %T", data)
	}
	out := map[string]uint64{}
	for _, p := range h.DataPoints {
		out[key(p.Attributes)] = p.Count
	}
	return out
}

func sums(t *testing.T, data metricdata.Aggregation) map[string]int64 {
	t.Helper()
	s, ok := data.(metricdata.Sum[int64])
	if !ok {
		t.Fatalf("not an int64 sum: %T", data)
	}
	out := map[string]int64{}
	for _, p := range s.DataPoints {
		out[key(p.Attributes)] = p.Value
	}
	return out
}

func gauges(t *testing.T, data metricdata.Aggregation) map[string]int64 {
	t.Helper()
	g, ok := data.(metricdata.Gauge[int64])
	if !ok {
		t.Fatalf("not an int64 gauge: %T", data)
	}
	out := map[string]int64{}
	for _, p := range g.DataPoints {
		out[key(p.Attributes)] = p.Value
	}
	return out
}

func TestInstrumentsRecord(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	var mu sync.Mutex
	var warned []string
	ins, err := bus.NewInstruments(bus.InstrumentOptions{Meter: mp.Meter("test"), Warn: func(msg string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		for i := 0; i+1 < len(args); i += 2 {
			if args[i] == "op" {
				warned = append(warned, args[i+1].(string))
			}
		}
	}})
	if err != nil {
		t.Fatalf("NewInstruments: %v", err)
	}
	ctx := t.Context()
	fail := func(context.Context, bus.Delivery) error { return errBoom }
	bus.Dispatch(ctx, delivery(1), &fakeSettler{}, okHandler, testCfg, &fakeDLQ{}, ins)
	bus.Dispatch(ctx, delivery(2), &fakeSettler{}, okHandler, testCfg, &fakeDLQ{}, ins)
	bus.Dispatch(ctx, delivery(1), &fakeSettler{}, fail, testCfg, &fakeDLQ{}, ins)
	bus.Dispatch(ctx, delivery(4), &fakeSettler{}, fail, testCfg, &fakeDLQ{}, ins)
	bus.Dispatch(ctx, delivery(1), &fakeSettler{settleErrs: settleErrs{ackErr: errors.New("gone")}}, okHandler, testCfg, &fakeDLQ{}, ins)
	other := delivery(1)
	other.Consumer = "audit"
	bus.Dispatch(ctx, other, &fakeSettler{}, okHandler, testCfg, &fakeDLQ{}, ins)

	ins.Published(ctx, 3, time.Millisecond, nil)
	ins.Published(ctx, 2, time.Millisecond, bus.Backpressure(time.Second, time.Second))
	ins.Published(ctx, 1, time.Millisecond, errors.New("broker down"))

	m := collect(t, reader)
	checks := []struct {
		name string
		got  any
		want any
	}{
		{"nops_bus_processing_duration_seconds", histCounts(t, m["nops_bus_processing_duration_seconds"]), map[string]uint64{
			"consumer=proj,outcome=acked": 2, "consumer=proj,outcome=retried": 1, "consumer=proj,outcome=dead_lettered": 1,
			"consumer=proj,outcome=unsettled": 1, "consumer=audit,outcome=acked": 1,
		}},
		{"nops_bus_requeues_total", sums(t, m["nops_bus_requeues_total"]), map[string]int64{"consumer=proj": 1}},
		{"nops_bus_dead_letters_total", sums(t, m["nops_bus_dead_letters_total"]), map[string]int64{"consumer=proj": 1}},
		{"nops_bus_publish_duration_seconds", histCounts(t, m["nops_bus_publish_duration_seconds"]), map[string]uint64{
			"outcome=ok": 1, "outcome=error": 2,
		}},
		{"nops_bus_publish_failures_total", sums(t, m["nops_bus_publish_failures_total"]), map[string]int64{
			"reason=backpressure": 2, "reason=error": 1,
		}},
	}
	for _, c := range checks {
		if diff := cmp.Diff(c.want, c.got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", c.name, diff)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff([]string{"ack"}, warned); diff != "" {
		t.Errorf("settlement failures warned about (-want +got):\n%s", diff)
	}
}

func TestNilInstruments(t *testing.T) {
	var ins *bus.Instruments
	ins.Published(t.Context(), 1, time.Millisecond, errBoom) // records nothing, does not panic
	none, err := bus.NewInstruments(bus.InstrumentOptions{})
	if err != nil {
		t.Fatalf("NewInstruments(zero) = %v", err)
	}
	none.Published(t.Context(), 1, time.Millisecond, nil)
	if got := bus.Dispatch(t.Context(), delivery(1), &fakeSettler{}, okHandler, testCfg, &fakeDLQ{}, none); got != bus.Acked {
		t.Errorf("Dispatch with zero instruments = %s", got)
	}
	if got := bus.Dispatch(t.Context(), delivery(1), &fakeSettler{settleErrs: settleErrs{ackErr: errBoom}}, okHandler, testCfg, &fakeDLQ{}, nil); got != bus.Unsettled {
		t.Errorf("Dispatch with nil instruments and a failing ack = %s", got)
	}
}

// statsBus is a bus.Bus whose only working methods are the ones RegisterGauges reads.
type statsBus struct {
	bus.Bus
	stats map[string]bus.ConsumerStats
	dlq   int64
}

func (b statsBus) ConsumerStats(_ context.Context, c string) (bus.ConsumerStats, error) {
	st, ok := b.stats[c]
	if !ok {
		return bus.ConsumerStats{}, errors.New("unknown consumer")
	}
	return st, nil
}

func (b statsBus) CountDeadLetters(context.Context, string) (int64, error) { return b.dlq, nil }

func TestRegisterGauges(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	b := statsBus{stats: map[string]bus.ConsumerStats{"proj": {Pending: 7, AckPending: 2}, "audit": {}}, dlq: 3}
	if err := bus.RegisterGauges(mp.Meter("test"), b, func() []string { return []string{"proj", "audit", "gone"} }); err != nil {
		t.Fatalf("RegisterGauges: %v", err)
	}
	m := collect(t, reader)
	if diff := cmp.Diff(map[string]int64{"consumer=proj": 7, "consumer=audit": 0}, gauges(t, m["nops_bus_consumer_lag"])); diff != "" {
		t.Errorf("nops_bus_consumer_lag (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]int64{"consumer=proj": 2, "consumer=audit": 0}, gauges(t, m["nops_bus_consumer_ack_pending"])); diff != "" {
		t.Errorf("nops_bus_consumer_ack_pending (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]int64{"": 3}, gauges(t, m["nops_bus_dlq_size"])); diff != "" {
		t.Errorf("nops_bus_dlq_size (-want +got):\n%s", diff)
	}
}
