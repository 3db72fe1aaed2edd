package consumers

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/metric"

	"github.com/nops-kernel/nops/internal/bus"
)

// Spec is one consumer for the kernel to subscribe: bus.Subscribe(ctx, s.Config, s.Handler).
type Spec struct {
	Config  bus.ConsumerConfig
	Handler bus.Handler
}

// Options tune the kernel's consumers; zero fields take bus.ConsumerConfig's defaults. The
// kernel maps config bus.max_deliveries, bus.backoff_initial/backoff_max and bus.ack_wait here.
type Options struct {
	MaxDeliveries int           // attempts before the DLQ (1 + retries)
	Backoff       bus.Backoff   // retry pacing
	AckWait       time.Duration // unsettled this long: delivered again
	Concurrency   int           // handlers running at once per subscription
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

// EventStatsConcurrency is how many event-stats handlers run at once at least: they share
// commits (EventStatsHandler's GroupBatcher), which only happens when several run at once — one
// at a time, every event pays a transaction of its own — and as many as a commit takes
// (DefaultBatch) can fill one.
const EventStatsConcurrency = DefaultBatch

// Kernel returns the consumers the kernel itself runs on the bus, every tenant and type: today
// the event-stats projection.
func Kernel(st Store, opts Options) []Spec {
	stats := opts
	stats.Concurrency = max(stats.Concurrency, EventStatsConcurrency)
	return []Spec{{
		Config:  stats.config(EventStatsName),
		Handler: eventStatsHandler(st, opts.Meter),
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
