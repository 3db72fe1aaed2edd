package consumers_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/consumers"
	"github.com/nops-kernel/nops/internal/events"
	"github.com/nops-kernel/nops/internal/store/postgres"
	"github.com/nops-kernel/nops/internal/store/sqlite"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// eachBackend runs fn on a fresh migrated SQLite store and, when configured, PostgreSQL store,
// each in its own parallel subtest.
func eachBackend(t *testing.T, fn func(t *testing.T, st consumers.Store)) {
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		s, err := sqlite.Open(t.Context(), sqlite.Config{Path: filepath.Join(t.TempDir(), "nops.db")}, nil)
		if err != nil {
			t.Fatalf("open sqlite: %v", err)
		}
		t.Cleanup(func() { _ = s.Close() })
		if err := s.MigrateUp(t.Context()); err != nil {
			t.Fatalf("migrate: %v", err)
		}
		fn(t, s)
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		s, err := postgres.Open(t.Context(), postgres.Config{URL: services.Postgres(t), MaxConns: 10}, nil)
		if err != nil {
			t.Fatalf("open postgres: %v", err)
		}
		t.Cleanup(func() { _ = s.Close() })
		if err := s.MigrateUp(t.Context()); err != nil {
			t.Fatalf("migrate: %v", err)
		}
		fn(t, s)
	})
}

var at = time.Date(2025, 3, 14, 15, 9, 26, 535897000, time.UTC)

// delivery returns the delivery of a real event of tenant about agent n, at time at+n s.
func delivery(t *testing.T, tenant string, n int) bus.Delivery {
	t.Helper()
	agent := fmt.Sprintf("agt_%04d", n)
	when := at.Add(time.Duration(n) * time.Second)
	p := events.AgentHeartbeat{AgentID: agent, Tenant: tenant, HeartbeatAt: when}
	e, err := events.New(events.TypeAgentHeartbeat, tenant, events.AgentSubject(agent), p, when, "")
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	payload, err := e.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return bus.Delivery{
		Message:  bus.Message{ID: e.ID, Tenant: tenant, Type: string(e.Type), Payload: payload},
		Consumer: consumers.EventStatsName, Attempt: 1, StoredAt: when,
	}
}

func stats(t *testing.T, st consumers.EventStatsReader, tenant string) []consumers.EventStat {
	t.Helper()
	got, err := st.EventStats(t.Context(), tenant)
	if err != nil {
		t.Fatalf("EventStats: %v", err)
	}
	return got
}

// TestEventStatsCountsOnce delivers events several times, as redeliveries do: each distinct
// event is counted once.
func TestEventStatsCountsOnce(t *testing.T) {
	eachBackend(t, func(t *testing.T, st consumers.Store) {
		h := consumers.EventStatsHandler(st)
		ds := []bus.Delivery{delivery(t, "ten_a", 1), delivery(t, "ten_a", 3), delivery(t, "ten_b", 2)}
		for attempt := 1; attempt <= 3; attempt++ {
			for _, d := range ds {
				d.Attempt = attempt
				if err := h(t.Context(), d); err != nil {
					t.Fatalf("handler(%s, attempt %d): %v", d.ID, attempt, err)
				}
			}
		}
		want := []consumers.EventStat{
			{Tenant: "ten_a", Type: string(events.TypeAgentHeartbeat), Count: 2, LastEventAt: at.Add(3 * time.Second)},
			{Tenant: "ten_b", Type: string(events.TypeAgentHeartbeat), Count: 1, LastEventAt: at.Add(2 * time.Second)},
		}
		if diff := cmp.Diff(want, stats(t, st, "")); diff != "" {
			t.Errorf("EventStats (-want +got):\n%s", diff)
		}
	})
}

// TestEventStatsConcurrentRedeliveries delivers one event to several handlers at once, as a
// redelivery after AckWait can while the first attempt still runs: it is counted once.
func TestEventStatsConcurrentRedeliveries(t *testing.T) {
	eachBackend(t, func(t *testing.T, st consumers.Store) {
		h := consumers.EventStatsHandler(st)
		d := delivery(t, "ten_a", 1)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range 8 {
			wg.Go(func() {
				<-start
				if err := h(t.Context(), d); err != nil {
					t.Errorf("handler: %v", err)
				}
			})
		}
		close(start)
		wg.Wait()
		if got := stats(t, st, "ten_a"); len(got) != 1 || got[0].Count != 1 {
			t.Fatalf("EventStats = %+v, want one event counted once", got)
		}
	})
}

// failingStore fails AddEventStats, the consumer's effect, the first fail times.
type failingStore struct {
	consumers.Store
	fail  atomic.Int32
	calls atomic.Int32
}

func (f *failingStore) AddEventStats(ctx context.Context, adds []consumers.EventStatAdd) error {
	f.calls.Add(1)
	if f.fail.Add(-1) >= 0 {
		return errors.New("projection write failed")
	}
	return f.Store.AddEventStats(ctx, adds)
}

// TestEventStatsFailureRollsBackClaim: a failing effect undoes its inbox claim, so the retry
// applies the event; later redeliveries are skipped without running the effect.
func TestEventStatsFailureRollsBackClaim(t *testing.T) {
	eachBackend(t, func(t *testing.T, st consumers.Store) {
		fs := &failingStore{Store: st}
		fs.fail.Store(2)
		h := consumers.EventStatsHandler(fs)
		d := delivery(t, "ten_a", 1)
		for attempt := 1; attempt <= 2; attempt++ {
			d.Attempt = attempt
			err := h(t.Context(), d)
			if err == nil || bus.IsTerminal(err) {
				t.Fatalf("attempt %d: handler error %v, want a retryable error", attempt, err)
			}
		}
		if got := stats(t, st, ""); len(got) != 0 {
			t.Fatalf("EventStats after failed attempts = %+v, want none", got)
		}
		for attempt := 3; attempt <= 4; attempt++ {
			d.Attempt = attempt
			if err := h(t.Context(), d); err != nil {
				t.Fatalf("attempt %d: %v", attempt, err)
			}
		}
		if got := stats(t, st, ""); len(got) != 1 || got[0].Count != 1 {
			t.Fatalf("EventStats = %+v, want the event counted once", got)
		}
		if n := fs.calls.Load(); n != 3 {
			t.Errorf("the effect ran %d times, want 3 (two failures, one success, then skipped)", n)
		}
	})
}

// TestEventStatsTerminal: payloads no retry can fix are terminal errors and count nothing.
func TestEventStatsTerminal(t *testing.T) {
	eachBackend(t, func(t *testing.T, st consumers.Store) {
		h := consumers.EventStatsHandler(st)
		good := delivery(t, "ten_a", 1)
		tests := []struct {
			name   string
			mutate func(d *bus.Delivery)
		}{
			{"not JSON", func(d *bus.Delivery) { d.Payload = []byte("not json") }},
			{"not an event", func(d *bus.Delivery) { d.Payload = []byte(`{"id":"x"}`) }},
			{"id differs from the message's", func(d *bus.Delivery) { d.ID = "evt_other" }},
			{"tenant differs from the message's", func(d *bus.Delivery) { d.Tenant = "ten_b" }},
			{"type differs from the message's", func(d *bus.Delivery) { d.Type = "nops.agent.registered.v1" }},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				d := good
				tt.mutate(&d)
				if err := h(t.Context(), d); !bus.IsTerminal(err) {
					t.Fatalf("handler error %v, want a terminal error", err)
				}
			})
		}
		if got := stats(t, st, ""); len(got) != 0 {
			t.Fatalf("EventStats = %+v, want none", got)
		}
	})
}

func TestKernel(t *testing.T) {
	st := consumers.Store(nil)
	specs := consumers.Kernel(st, consumers.Options{MaxDeliveries: 3, Backoff: bus.Backoff{Initial: time.Second, Max: time.Minute}, AckWait: 10 * time.Second})
	if len(specs) != 1 {
		t.Fatalf("Kernel = %d specs, want 1", len(specs))
	}
	c := specs[0].Config
	if c.Name != consumers.EventStatsName || c.MaxDeliveries != 3 || c.Backoff.Initial != time.Second || c.AckWait != 10*time.Second || c.Concurrency != consumers.EventStatsConcurrency || c.Batch != consumers.EventStatsBatch {
		t.Errorf("config = %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	if specs[0].Batch == nil || specs[0].Handler != nil {
		t.Error("want a batch handler only")
	}
	if d := consumers.Kernel(st, consumers.Options{})[0].Config; d.MaxDeliveries != bus.DefaultMaxDeliveries || d.AckWait != bus.DefaultAckWait {
		t.Errorf("defaults = %+v", d)
	}
}
