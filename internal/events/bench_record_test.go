package events_test

import (
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/events"
)

// BenchmarkNewRecord builds the same record as BenchmarkNewOutbox with NewRecord.
func BenchmarkNewRecord(b *testing.B) {
	p := benchUsage()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := events.NewRecord(events.TypeBillingUsage, tenantA, p.EventSubject(), p, base.Add(time.Millisecond), traceparnt); err != nil {
			b.Fatal(err)
		}
	}
}
