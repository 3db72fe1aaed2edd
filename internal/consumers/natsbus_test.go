package consumers_test

import (
	"context"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/bus/natsbus"
	"github.com/nops-kernel/nops/internal/consumers"
	"github.com/nops-kernel/nops/internal/testutil/embeddedbus"
)

// openBus starts an embedded JetStream in a temporary directory, in a namespace of its own.
func openBus(t *testing.T) *natsbus.Bus { return embeddedbus.Open(t, "consumers_") }

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestNATSRedeliveriesCountOnce runs the kernel's consumers on a real embedded JetStream. One
// event is published twice (the broker's dedup drops the repeat) and redelivered to the
// consumer twice under new dedup keys (as DLQ reprocessing and replay do), and its first
// attempt fails: it is delivered several times and counted once.
func TestNATSRedeliveriesCountOnce(t *testing.T) {
	eachBackend(t, func(t *testing.T, st consumers.Store) {
		b := openBus(t)
		fs := &failingStore{Store: st}
		fs.fail.Store(1)
		deliveries := make(chan int, 100)
		opts := consumers.Options{MaxDeliveries: 5, Backoff: bus.Backoff{Initial: 10 * time.Millisecond, Max: 20 * time.Millisecond}, AckWait: 5 * time.Second}
		for _, spec := range consumers.Kernel(fs, opts) {
			h := spec.Batch
			sub, err := b.SubscribeBatch(t.Context(), spec.Config, func(ctx context.Context, ds []bus.Delivery) []error {
				errs := h(ctx, ds)
				for _, d := range ds {
					deliveries <- d.Attempt
				}
				return errs
			})
			if err != nil {
				t.Fatalf("Subscribe: %v", err)
			}
			t.Cleanup(func() { _ = sub.Stop(context.Background()) })
		}
		d := delivery(t, "ten_a", 1)
		other := delivery(t, "ten_a", 2)
		counted := func(n int64) func() bool {
			return func() bool {
				got, err := st.EventStats(t.Context(), "ten_a")
				return err == nil && len(got) == 1 && got[0].Count == n
			}
		}
		// The other event only once the first is counted: published together, the two could
		// share a group commit, whose failure is retried one by one within the same attempts.
		for _, m := range []bus.Message{d.Message, other.Message} {
			for range 2 {
				if err := b.Publish(t.Context(), m); err != nil {
					t.Fatalf("Publish: %v", err)
				}
			}
			waitFor(t, "the event counted", counted(map[string]int64{d.ID: 1, other.ID: 2}[m.ID]))
		}
		for _, key := range []string{"reprocess-1", "reprocess-2"} {
			if err := b.Redeliver(t.Context(), consumers.EventStatsName, d.Message, key); err != nil {
				t.Fatalf("Redeliver: %v", err)
			}
		}
		// One failed and one successful attempt of the first delivery, the other event, and two
		// redeliveries, each of which the inbox skips.
		waitFor(t, "every delivery handled", func() bool { return len(deliveries) >= 5 })
		if !counted(2)() {
			got, _ := st.EventStats(t.Context(), "")
			t.Fatalf("EventStats = %+v, want 2 events counted", got)
		}
		if n := fs.calls.Load(); n != 3 {
			t.Errorf("the effect ran %d times, want 3 (one failure, two events)", n)
		}
	})
}
