package e2e

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/events"
	"github.com/nops-kernel/nops/internal/kernel"
	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
)

// publishedEvents waits until the kernel's outbox relay has published every committed event,
// then returns the events of the bus's stream, parsed, in stream order. Reading the stream, not
// the outbox, checks the whole way an event takes: outbox → relay → broker (with its dedup).
func publishedEvents(t *testing.T, k *kerneltest.Kernel) []events.Event {
	t.Helper()
	st, err := kernel.OpenStore(context.Background(), k.Config, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	kerneltest.WaitFor(t, 30*time.Second, "the outbox relay publishes every event", func() bool {
		b, err := st.OutboxBacklog(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return b.Pending == 0
	})
	return streamEvents(t, k)
}

// streamEvents returns the events on the kernel's bus so far, parsed, in stream order.
func streamEvents(t *testing.T, k *kerneltest.Kernel) []events.Event {
	t.Helper()
	var out []events.Event
	_, err := k.Bus().Replay(context.Background(), time.Now().Add(-24*time.Hour), time.Now().Add(time.Hour), bus.Filter{},
		func(s bus.Stored) error {
			ev, err := events.Parse(s.Payload)
			if err != nil {
				t.Errorf("event %s on the bus does not parse: %v", s.ID, err)
				return nil
			}
			out = append(out, ev)
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
