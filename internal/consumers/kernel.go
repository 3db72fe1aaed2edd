package consumers

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/metric"

	"github.com/nops-kernel/nops/internal/bus"
)

// Spec is one consumer for the kernel to subscribe (Subscribe): a handler of one delivery, or
// a batch handler.
type Spec struct {
	Config  bus.ConsumerConfig
	Handler bus.Handler      // one delivery per call; nil when Batch is set
	Batch   bus.BatchHandler // up to Config.Batch deliveries per call (bus.BatchSubscriber)
}

// Subscribe subscribes s on b: bus.SubscribeBatch with s.Batch when set, else b.Subscribe.
func (s Spec) Subscribe(ctx context.Context, b bus.Bus) (bus.Subscription, error) {
	if s.Batch != nil {
		return bus.SubscribeBatch(ctx, b, s.Config, s.Batch)
	}
	return b.Subscribe(ctx, s.Config, s.Handler)
}

// Options tune the kernel's consumers; zero fields take bus.ConsumerConfig's defaults. The
// kernel maps config bus.max_deliveries, bus.backoff_initial/backoff_max and bus.ack_wait here.
type Options struct {
	MaxDeliveries int           // attempts before the DLQ (1 + retries)
	Backoff       bus.Backoff   // retry pacing
	AckWait       time.Duration // unsettled this long: delivered again
	Concurrency   int           // handlers (batch handlers: goroutines) running at once per subscription
	// OnDeadLetter, when set, is called after one of these consumers dead-lettered a message
	// (the kernel audits it).
	OnDeadLetter func(ctx context.Context, dl bus.DeadLetter)
	// Meter, when set, records the consumers' own metrics (BatchSizeMetric).
	Meter metric.Meter
}

// WithMeter returns o recording the consumers' metrics with m.
func (o Options) WithMeter(m metric.Meter) Options {
	o.Meter = m
	return o
}

// Store is what the kernel's consumers need of the database; both storage adapters implement it.
type Store interface {
	EventStatsStore
}

// The event-stats consumer runs EventStatsBatchHandler: EventStatsConcurrency goroutines, each
// handed up to EventStatsBatch deliveries the bus has queued, counted in one transaction. A few
// goroutines, each handling a whole batch, instead of one per event: when a commit ends, only
// they wake, not one goroutine per event of the group (which queued for a CPU in front of the
// kernel's requests; docs/benchmarks.md, session 9). Two, so that one batch is parsed and
// claimed while the other commits.
const (
	EventStatsConcurrency = 2
	EventStatsBatch       = DefaultBatch
)

// Kernel returns the consumers the kernel itself runs on the bus, every tenant and type: today
// the event-stats projection.
func Kernel(st Store, opts Options) []Spec {
	stats := opts
	stats.Concurrency = max(stats.Concurrency, EventStatsConcurrency)
	cfg := stats.config(EventStatsName)
	cfg.Batch = EventStatsBatch
	return []Spec{{
		Config: cfg,
		Batch:  eventStatsBatchHandler(st, opts.Meter),
	}}
}

func (o Options) config(name string) bus.ConsumerConfig {
	return bus.ConsumerConfig{
		Name:          name,
		MaxDeliveries: o.MaxDeliveries,
		Backoff:       o.Backoff,
		AckWait:       o.AckWait,
		Concurrency:   o.Concurrency,
		OnDeadLetter:  o.OnDeadLetter,
	}.WithDefaults()
}
