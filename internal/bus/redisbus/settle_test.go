package redisbus

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/bus"
)

// TestStopSendsQueuedAcks: acknowledgements are asynchronous, so Stop must send the queued ones
// (more than one batch, handled and skipped entries alike) and wait for Redis's replies: nothing
// is pending once Stop has returned.
func TestStopSendsQueuedAcks(t *testing.T) {
	b, c := testBus(t, nil)
	var handled atomic.Int64
	sub, err := b.Subscribe(context.Background(), bus.ConsumerConfig{Name: "batched", Concurrency: 8, Filter: bus.Filter{Tenants: []string{"ten_a"}}},
		func(context.Context, bus.Delivery) error {
			handled.Add(1)
			return nil
		})
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	const wanted, skipped = 3*settleBatchMax + 7, settleBatchMax + 1
	var msgs []bus.Message
	for i := range wanted + skipped {
		m := msg(fmt.Sprintf("m-%d", i))
		if i < skipped {
			m.Tenant = "ten_other" // published first: read before the wanted ones
		}
		msgs = append(msgs, m)
	}
	for i := 0; i < len(msgs); i += 100 {
		if err := b.Publish(ctxT(t), msgs[i:min(i+100, len(msgs))]...); err != nil {
			t.Fatalf("Publish: %v", err)
		}
	}
	eventually(t, "every wanted message handled", func() bool { return handled.Load() == wanted })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := sub.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	// The skipped entries were read before the wanted ones; they and every handled one must be
	// acknowledged by now, without waiting.
	p, err := c.XPending(ctxT(t), b.keys.events(), "batched").Result()
	if err != nil {
		t.Fatalf("XPending: %v", err)
	}
	if p.Count != 0 {
		t.Errorf("%d entries still pending after Stop returned", p.Count)
	}
	// A settler used after Stop (the batcher closed) acknowledges synchronously.
	s := sub.(*subscription)
	st := &settler{s: s, key: s.events, id: "0-1", member: kindEvents + "/0-1"}
	if err := st.Ack(ctxT(t)); err != nil {
		t.Errorf("Ack after Stop: %v", err)
	}
}
