package consumers_test

import (
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/consumers"
	"github.com/nops-kernel/nops/internal/events"
	"github.com/nops-kernel/nops/internal/store/sqlite"
)

// usageDeliveries returns n deliveries of distinct billing.usage events of one tenant, as the
// invoke path meters every call.
func usageDeliveries(b *testing.B, n int) []bus.Delivery {
	b.Helper()
	const tenant = "ten_01jq7x3k9m2v8w4y6z0a1b2c3d"
	ds := make([]bus.Delivery, n)
	for i := range ds {
		when := at.Add(time.Duration(i) * time.Millisecond)
		p := events.BillingUsage{
			Tenant: tenant, AgentID: "agt_01jq7x3k9m2v8w4y6z0a1b2c3e", Source: events.UsageSourceInvocation,
			Capability: "bench.echo", RequestID: fmt.Sprintf("req_01jq7x3k9m2v8w4y6z%08d", i), Status: 200,
			RequestBytes: 97, ResponseBytes: 212, DurationMs: 0.734, StartedAt: when,
		}
		e, err := events.New(events.TypeBillingUsage, tenant, p.EventSubject(), p, when, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
		if err != nil {
			b.Fatal(err)
		}
		payload, err := e.MarshalJSON()
		if err != nil {
			b.Fatal(err)
		}
		ds[i] = bus.Delivery{
			Message:  bus.Message{ID: e.ID, Tenant: tenant, Type: string(e.Type), Payload: payload},
			Consumer: consumers.EventStatsName, Attempt: 1, StoredAt: when,
		}
	}
	return ds
}

// BenchmarkEventStatsHandler counts distinct billing.usage events on SQLite with the event-stats
// handler of one delivery per call: "serial" one at a time (every event a transaction of its
// own), "concurrent" with 64 handlers running at once, so that they share commits. (The kernel
// runs EventStatsBatchHandler instead.) One op is one event.
//
//	go test -run '^$' -bench EventStatsHandler -benchmem -count 3 ./internal/consumers
func BenchmarkEventStatsHandler(b *testing.B) {
	open := func(b *testing.B) bus.Handler {
		s, err := sqlite.Open(b.Context(), sqlite.Config{Path: filepath.Join(b.TempDir(), "nops.db")}, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = s.Close() })
		if err := s.MigrateUp(b.Context()); err != nil {
			b.Fatal(err)
		}
		return consumers.EventStatsHandler(s)
	}
	b.Run("serial", func(b *testing.B) {
		h := open(b)
		ds := usageDeliveries(b, b.N)
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			if err := h(b.Context(), ds[i]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("concurrent", func(b *testing.B) {
		h := open(b)
		ds := usageDeliveries(b, b.N)
		var next atomic.Int64
		b.SetParallelism(32) // 32 × GOMAXPROCS goroutines: 64 on the 2-CPU machine
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := h(b.Context(), ds[next.Add(1)-1]); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
