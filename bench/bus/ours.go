package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nops-kernel/nops/internal/bus"
)

// The tenant and type of every benchmark event.
const (
	benchTenant = "bench"
	benchType   = "nops.bench.event.v1"
)

// ours is the kernel's layer: bus.Publish and a bus.Subscribe consumer whose handler records
// the event and returns nil (bus.Dispatch acknowledges it).
type ours struct {
	b       bus.Bus
	sub     bus.Subscription
	payload []byte
}

var _ publisher = (*ours)(nil)

// startOurs subscribes a consumer to b that records every delivery into rec, with concurrency
// handlers and as many messages in hand (running plus fetched ahead) as window: the raw client's
// read window, so that both consumers hold as many unacknowledged messages.
func startOurs(ctx context.Context, b bus.Bus, concurrency, window int, payload []byte, rec *recorder) (*ours, error) {
	prefetch := window - concurrency
	if prefetch <= 0 {
		prefetch = bus.NoPrefetch
	}
	sub, err := b.Subscribe(context.WithoutCancel(ctx), bus.ConsumerConfig{Name: "bench", Concurrency: concurrency, Prefetch: prefetch},
		func(_ context.Context, d bus.Delivery) error {
			rec.consumedID(d.ID)
			return nil
		})
	if err != nil {
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	return &ours{b: b, sub: sub, payload: payload}, nil
}

func (o *ours) publish(ctx context.Context, evs []event) error {
	msgs := make([]bus.Message, len(evs))
	for i, ev := range evs {
		msgs[i] = bus.Message{ID: ev.id, Tenant: benchTenant, Type: benchType, Payload: o.payload}
	}
	return o.b.Publish(ctx, msgs...)
}

// close stops the consumer and closes the bus.
func (o *ours) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var err error
	if o.sub != nil {
		err = o.sub.Stop(ctx)
	}
	return errors.Join(err, o.b.Close())
}

// cloudEvent returns a structured-mode CloudEvent of exactly size bytes (padded in its data), the
// payload of every benchmark event.
func cloudEvent(size int) []byte {
	const head = `{"specversion":"1.0","id":"evt_01JBENCH0000000000000000","source":"/nops/bench","type":"` + benchType +
		`","time":"2026-01-01T00:00:00Z","tenant":"` + benchTenant + `","datacontenttype":"application/json","data":{"pad":"`
	const tail = `"}}`
	n := max(size-len(head)-len(tail), 0)
	b := make([]byte, 0, len(head)+n+len(tail))
	b = append(b, head...)
	for i := range n {
		b = append(b, byte('a'+i%26))
	}
	return append(b, tail...)
}
