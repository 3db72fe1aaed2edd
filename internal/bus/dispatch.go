package bus

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Settler settles one delivered message with the broker. Adapters implement it per delivery.
// A settlement may be sent asynchronously (an error then means only that it could not be sent):
// the adapter makes sure the broker has it before Subscription.Stop returns, and one lost on the
// way leaves the message pending, delivered again after AckWait and deduped by event id.
type Settler interface {
	// Ack removes the message from the consumer: it is done.
	Ack(ctx context.Context) error
	// Nak asks the broker to deliver the message again after delay; the redelivery counts as
	// the next attempt.
	Nak(ctx context.Context, delay time.Duration) error
	// Term removes the message from the consumer without redelivery; Dispatch calls it once the
	// message is safely in the DLQ.
	Term(ctx context.Context) error
}

// DeadLetterWriter is where Dispatch puts the messages a consumer gives up on.
type DeadLetterWriter interface {
	AddDeadLetter(ctx context.Context, dl DeadLetter) error
}

// Outcome is what Dispatch did with a delivery.
type Outcome string

// The outcomes, also the "outcome" attribute of the processing metrics.
const (
	Acked        Outcome = "acked"         // the handler succeeded
	Retried      Outcome = "retried"       // the handler failed; redelivery asked for
	DeadLettered Outcome = "dead_lettered" // in the DLQ and removed from the consumer
	Unsettled    Outcome = "unsettled"     // the broker could not be told; it redelivers after AckWait
)

// settleTimeout bounds one call to the broker to settle a message.
const settleTimeout = 5 * time.Second

// Dispatch runs h on d and settles d with s according to the handler's result and cfg (which
// must have its defaults): the one place where retry, backoff and dead-lettering are decided, for
// every adapter (see the package documentation). A panicking handler counts as a failed attempt.
// A delivery already beyond cfg.MaxDeliveries (AckWait expired on earlier attempts: the process
// died or hung) is dead-lettered without running the handler again. When the dead letter cannot
// be written the message is redelivered later instead, so it is never lost.
//
// Two consequences of "never lost" when the broker or the DLQ fails at the wrong moment: a
// Terminal failure whose dead letter cannot be written is delivered again and so attempted again;
// and when the message cannot be removed from the consumer after its dead letter was written, the
// redelivery writes the same dead letter (stored once, the DLQ dedups on ID+Source) and calls
// OnDeadLetter again, so that hook is at least once.
//
// The handler's context carries the span of the delivery (a child of the publisher's
// traceparent) and ends after cfg.AckWait, when the broker would deliver the message again.
func Dispatch(ctx context.Context, d Delivery, s Settler, h Handler, cfg ConsumerConfig, dlq DeadLetterWriter, ins *Instruments) Outcome {
	ins = ins.orNop()
	start := time.Now()
	ctx, span := ins.startSpan(ctx, d)
	defer span.End()

	herr := overDelivered(d, cfg)
	handled := start
	if herr == nil {
		hctx, stop := withDeadline(ctx, start.Add(cfg.AckWait))
		herr = safeCall(hctx, h, d)
		handled = time.Now()
		stop(handled)
	}
	return finish(ctx, span, start, handled, d, s, herr, cfg, dlq, ins)
}

// DispatchBatch is Dispatch for a batch handler: it runs h once on the deliveries ds that are
// not beyond cfg.MaxDeliveries (those are dead-lettered without running it, as by Dispatch),
// and settles each delivery ds[i] with ss[i] by its own result exactly as Dispatch settles
// one. A panicking handler, or one returning a result per delivery of the wrong count, fails
// every delivery it was given (one failed attempt each). Each delivery has its span, a child of
// its publisher's traceparent; the handler's context carries none of them (it ends after
// cfg.AckWait). It returns the outcomes in the order of ds.
func DispatchBatch(ctx context.Context, ds []Delivery, ss []Settler, h BatchHandler, cfg ConsumerConfig, dlq DeadLetterWriter, ins *Instruments) []Outcome {
	ins = ins.orNop()
	start := time.Now()
	ctxs := make([]context.Context, len(ds))
	spans := make([]trace.Span, len(ds))
	herrs := make([]error, len(ds))
	run := make([]Delivery, 0, len(ds))
	at := make([]int, 0, len(ds)) // run[j] is ds[at[j]]
	for i, d := range ds {
		ctxs[i], spans[i] = ins.startSpan(ctx, d)
		if herrs[i] = overDelivered(d, cfg); herrs[i] == nil {
			run = append(run, d)
			at = append(at, i)
		}
	}
	handled := start
	if len(run) > 0 {
		hctx, stop := withDeadline(ctx, start.Add(cfg.AckWait))
		results := safeCallBatch(hctx, h, run)
		handled = time.Now()
		stop(handled)
		for j, i := range at {
			herrs[i] = results[j]
		}
	}
	out := make([]Outcome, len(ds))
	for i, d := range ds {
		out[i] = finish(ctxs[i], spans[i], start, handled, d, ss[i], herrs[i], cfg, dlq, ins)
		spans[i].End()
	}
	return out
}

// overDelivered fails a delivery already beyond cfg.MaxDeliveries: AckWait expired on its
// earlier attempts (the process died or hung), so it is dead-lettered without another attempt.
func overDelivered(d Delivery, cfg ConsumerConfig) error {
	if d.Attempt <= cfg.MaxDeliveries {
		return nil
	}
	return fmt.Errorf("delivered %d times without being settled (max deliveries %d): the handler crashed or exceeded ack wait %s", d.Attempt, cfg.MaxDeliveries, cfg.AckWait)
}

// finish settles d, whose handler (started at start) returned herr at handled, and records its
// outcome on its span and in the metrics: the one settle path of Dispatch and DispatchBatch.
func finish(ctx context.Context, span trace.Span, start, handled time.Time, d Delivery, s Settler, herr error, cfg ConsumerConfig, dlq DeadLetterWriter, ins *Instruments) Outcome {
	outcome, end := settle(ctx, handled, d, s, herr, cfg, dlq, ins)
	if herr != nil {
		span.RecordError(herr)
		span.SetStatus(codes.Error, string(outcome))
	}
	if span.IsRecording() {
		span.SetAttributes(attribute.String("nops.bus.outcome", string(outcome)))
	}
	ins.processed(ctx, d.Consumer, outcome, end.Sub(start))
	return outcome
}

// settle settles d after its handler returned herr at now, and returns the outcome and when
// settling ended (the clock is read once per step: it is a noticeable part of a fast
// consumer's cost on some virtual machines).
func settle(ctx context.Context, now time.Time, d Delivery, s Settler, herr error, cfg ConsumerConfig, dlq DeadLetterWriter, ins *Instruments) (Outcome, time.Time) {
	sctx, stop := withDeadline(context.WithoutCancel(ctx), now.Add(settleTimeout))
	o := settleWith(sctx, d, s, herr, cfg, dlq, ins)
	end := time.Now()
	stop(end)
	return o, end
}

// settleWith is settle's decision, with the settlement context sctx.
func settleWith(sctx context.Context, d Delivery, s Settler, herr error, cfg ConsumerConfig, dlq DeadLetterWriter, ins *Instruments) Outcome {
	if herr == nil {
		if err := s.Ack(sctx); err != nil {
			ins.logSettle(d, "ack", err)
			return Unsettled
		}
		return Acked
	}
	if !IsTerminal(herr) && d.Attempt < cfg.MaxDeliveries {
		if err := s.Nak(sctx, RetryDelay(herr, d.Attempt, cfg.Backoff)); err != nil {
			ins.logSettle(d, "nak", err)
			return Unsettled
		}
		return Retried
	}
	dl := DeadLetter{
		ID:       DeadLetterID(d.Consumer, d.ID),
		Message:  d.Message,
		Consumer: d.Consumer,
		Reason:   herr.Error(),
		Attempts: d.Attempt,
		StoredAt: d.StoredAt,
		FailedAt: time.Now().UTC(),
		Source:   d.Position,
	}
	if err := dlq.AddDeadLetter(sctx, dl); err != nil {
		ins.logSettle(d, "dead-letter", err)
		// Not lost: delivered again later, and dead-lettered then without another attempt.
		if err := s.Nak(sctx, cfg.Backoff.Delay(d.Attempt)); err != nil {
			ins.logSettle(d, "nak", err)
		}
		return Unsettled
	}
	if cfg.OnDeadLetter != nil {
		cfg.OnDeadLetter(sctx, dl)
	}
	if err := s.Term(sctx); err != nil {
		// The dead letter exists; a redelivery writes the same DeadLetterID again.
		ins.logSettle(d, "term", err)
		return Unsettled
	}
	return DeadLettered
}

// safeCall runs h, turning a panic into an error that names it.
func safeCall(ctx context.Context, h Handler, d Delivery) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("handler panicked: %v\n%s", r, debug.Stack())
		}
	}()
	return h(ctx, d)
}

// safeCallBatch runs h on ds and returns one result per delivery: a panic, or a result of the
// wrong length, fails each of them.
func safeCallBatch(ctx context.Context, h BatchHandler, ds []Delivery) (results []error) {
	defer func() {
		if r := recover(); r != nil {
			results = failAll(len(ds), fmt.Errorf("batch handler panicked: %v\n%s", r, debug.Stack()))
		}
	}()
	results = h(ctx, ds)
	if len(results) != len(ds) {
		return failAll(len(ds), fmt.Errorf("batch handler returned %d results for %d deliveries", len(results), len(ds)))
	}
	return results
}

func failAll(n int, err error) []error {
	out := make([]error, n)
	for i := range out {
		out[i] = err
	}
	return out
}

// Instruments are the traces and metrics of a bus, shared by its adapters. A nil *Instruments
// records nothing.
type Instruments struct {
	tracer     trace.Tracer
	propagator propagation.TextMapPropagator
	logf       func(msg string, args ...any)

	processing metric.Float64Histogram // per consumer and outcome
	requeues   metric.Int64Counter     // per consumer
	deadLetter metric.Int64Counter     // per consumer
	publishDur metric.Float64Histogram // per outcome
	publishErr metric.Int64Counter     // per reason

	attrCache sync.Map // attrKey → metric.MeasurementOption
}

// InstrumentOptions configure NewInstruments; zero fields record nothing.
type InstrumentOptions struct {
	Meter      metric.Meter
	Tracer     trace.Tracer
	Propagator propagation.TextMapPropagator // reads the publisher's traceparent; default TraceContext
	// Warn logs failures to settle a message with the broker.
	Warn func(msg string, args ...any)
}

// NewInstruments creates the bus's metric instruments:
//
//	nops_bus_processing_duration_seconds{consumer,outcome}  handler time + settlement
//	nops_bus_requeues_total{consumer}                       retries asked for
//	nops_bus_dead_letters_total{consumer}                   messages dead-lettered (the drop rate)
//	nops_bus_publish_duration_seconds{outcome}              publish → broker acknowledgement
//	nops_bus_publish_failures_total{reason}                 backpressure or error
//
// Consumer lag and DLQ size are gauges read from the broker (ConsumerStats, CountDeadLetters);
// RegisterGauges registers them.
func NewInstruments(o InstrumentOptions) (*Instruments, error) {
	ins := &Instruments{tracer: o.Tracer, propagator: o.Propagator, logf: o.Warn}
	if ins.tracer == nil {
		ins.tracer = noop.NewTracerProvider().Tracer("")
	}
	if ins.propagator == nil {
		ins.propagator = propagation.TraceContext{}
	}
	if ins.logf == nil {
		ins.logf = func(string, ...any) {}
	}
	m := o.Meter
	if m == nil {
		return ins, nil
	}
	var err error
	latency := metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
	if ins.processing, err = m.Float64Histogram("nops_bus_processing_duration_seconds", metric.WithUnit("s"),
		metric.WithDescription("Time to process and settle one delivery, by consumer and outcome."), latency); err != nil {
		return nil, err
	}
	if ins.requeues, err = m.Int64Counter("nops_bus_requeues_total",
		metric.WithDescription("Deliveries that failed and were scheduled for redelivery, by consumer.")); err != nil {
		return nil, err
	}
	if ins.deadLetter, err = m.Int64Counter("nops_bus_dead_letters_total",
		metric.WithDescription("Messages moved to the dead-letter queue, by consumer.")); err != nil {
		return nil, err
	}
	if ins.publishDur, err = m.Float64Histogram("nops_bus_publish_duration_seconds", metric.WithUnit("s"),
		metric.WithDescription("Time from publish to the broker's acknowledgement, by outcome."), latency); err != nil {
		return nil, err
	}
	if ins.publishErr, err = m.Int64Counter("nops_bus_publish_failures_total",
		metric.WithDescription("Publishes that failed, by reason (backpressure, error).")); err != nil {
		return nil, err
	}
	return ins, nil
}

var nopInstruments = &Instruments{
	tracer:     noop.NewTracerProvider().Tracer(""),
	propagator: propagation.TraceContext{},
	logf:       func(string, ...any) {},
}

func (ins *Instruments) orNop() *Instruments {
	if ins == nil {
		return nopInstruments
	}
	return ins
}

func (ins *Instruments) startSpan(ctx context.Context, d Delivery) (context.Context, trace.Span) {
	if d.TraceParent != "" {
		ctx = ins.propagator.Extract(ctx, propagation.MapCarrier{"traceparent": d.TraceParent})
	}
	ctx, span := ins.tracer.Start(ctx, "consume "+d.Consumer, trace.WithSpanKind(trace.SpanKindConsumer))
	if span.IsRecording() { // building attributes nobody records costs more than the handler of a fast consumer
		span.SetAttributes(
			attribute.String("messaging.system", "nops"),
			attribute.String("messaging.operation.type", "process"),
			attribute.String("messaging.consumer.group.name", d.Consumer),
			attribute.String("messaging.message.id", d.ID),
			attribute.String("cloudevents.event_type", d.Type),
			attribute.String("nops.tenant", d.Tenant),
			attribute.Int("messaging.delivery.attempt", d.Attempt),
		)
	}
	return ctx, span
}

// attrKey names a cached attribute set: consumer, and outcome or "".
type attrKey struct{ consumer, outcome string }

// attrs returns the metric option for consumer and outcome, built once: a new attribute set
// per delivery (sorting, hashing) is a noticeable part of a fast consumer's cost.
func (ins *Instruments) attrs(consumer, outcome string) metric.MeasurementOption {
	k := attrKey{consumer, outcome}
	if v, ok := ins.attrCache.Load(k); ok {
		return v.(metric.MeasurementOption)
	}
	kv := []attribute.KeyValue{attribute.String("consumer", consumer)}
	if outcome != "" {
		kv = append(kv, attribute.String("outcome", outcome))
	}
	v, _ := ins.attrCache.LoadOrStore(k, metric.WithAttributeSet(attribute.NewSet(kv...)))
	return v.(metric.MeasurementOption)
}

func (ins *Instruments) processed(ctx context.Context, consumer string, o Outcome, d time.Duration) {
	if ins.processing != nil {
		ins.processing.Record(ctx, d.Seconds(), ins.attrs(consumer, string(o)))
	}
	if o != Retried && o != DeadLettered {
		return
	}
	c := ins.attrs(consumer, "")
	switch o {
	case Retried:
		if ins.requeues != nil {
			ins.requeues.Add(ctx, 1, c)
		}
	case DeadLettered:
		if ins.deadLetter != nil {
			ins.deadLetter.Add(ctx, 1, c)
		}
	}
}

func (ins *Instruments) logSettle(d Delivery, op string, err error) {
	ins.orNop().logf("bus: could not settle a delivery; the broker will deliver it again", "op", op,
		"consumer", d.Consumer, "event_id", d.ID, "attempt", d.Attempt, "error", err.Error())
}

// Published records one Publish call of n messages that took d and ended with err. Adapters call
// it.
func (ins *Instruments) Published(ctx context.Context, n int, d time.Duration, err error) {
	if ins == nil || ins.publishDur == nil {
		return
	}
	outcome := "ok"
	if err != nil {
		outcome = "error"
		reason := "error"
		if errors.Is(err, ErrBackpressure) {
			reason = "backpressure"
		}
		ins.publishErr.Add(ctx, int64(n), metric.WithAttributes(attribute.String("reason", reason)))
	}
	ins.publishDur.Record(ctx, d.Seconds(), metric.WithAttributes(attribute.String("outcome", outcome)))
}

// InjectTraceParent returns the W3C traceparent of the span in ctx, or "" when it has none, for
// Message.TraceParent.
func InjectTraceParent(ctx context.Context) string {
	c := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, c)
	return c["traceparent"]
}

// RegisterGauges registers the broker-read gauges on m: consumer lag
// (nops_bus_consumer_lag{consumer}), unsettled deliveries (nops_bus_consumer_ack_pending{consumer})
// and DLQ size (nops_bus_dlq_size). consumers returns the names to report.
func RegisterGauges(m metric.Meter, b Bus, consumers func() []string) error {
	lag, err := m.Int64ObservableGauge("nops_bus_consumer_lag", metric.WithDescription("Messages matching a consumer not yet delivered to it."))
	if err != nil {
		return err
	}
	pending, err := m.Int64ObservableGauge("nops_bus_consumer_ack_pending", metric.WithDescription("Messages delivered to a consumer and not yet settled."))
	if err != nil {
		return err
	}
	dlqSize, err := m.Int64ObservableGauge("nops_bus_dlq_size", metric.WithDescription("Messages in the dead-letter queue."))
	if err != nil {
		return err
	}
	_, err = m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		for _, c := range consumers() {
			st, err := b.ConsumerStats(ctx, c)
			if err != nil {
				continue
			}
			a := metric.WithAttributes(attribute.String("consumer", c))
			o.ObserveInt64(lag, st.Pending, a)
			o.ObserveInt64(pending, st.AckPending, a)
		}
		if n, err := b.CountDeadLetters(ctx, ""); err == nil {
			o.ObserveInt64(dlqSize, n)
		}
		return nil
	}, lag, pending, dlqSize)
	return err
}
