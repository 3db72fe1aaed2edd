package events_test

import (
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/events"
)

// benchUsage is the billing.usage of one invocation, as the invoke path meters every call.
func benchUsage() events.BillingUsage {
	return events.BillingUsage{
		Tenant: tenantA, AgentID: agentID, Source: events.UsageSourceInvocation, Capability: "bench.echo",
		RequestID: "req_01jq7x3k9m2v8w4y6z0a1b2c40", Status: 200, RequestBytes: 97, ResponseBytes: 212,
		DurationMs: 0.734, StartedAt: base,
	}
}

// BenchmarkNewOutbox builds a usage event with New and its outbox record with Outbox.
//
//	go test -run '^$' -bench 'NewOutbox|NewRecord|Parse' -benchmem -count 6 ./internal/events
func BenchmarkNewOutbox(b *testing.B) {
	p := benchUsage()
	b.ReportAllocs()
	for b.Loop() {
		e, err := events.New(events.TypeBillingUsage, tenantA, p.EventSubject(), p, base.Add(time.Millisecond), traceparnt)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := e.Outbox(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParse reads a usage event as every consumer reads every event (the event-stats
// consumer among them).
func BenchmarkParse(b *testing.B) {
	p := benchUsage()
	e, err := events.New(events.TypeBillingUsage, tenantA, p.EventSubject(), p, base.Add(time.Millisecond), traceparnt)
	if err != nil {
		b.Fatal(err)
	}
	raw, err := e.MarshalJSON()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := events.Parse(raw); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseAttributes reads the same usage event's attributes only, as the event-stats
// consumer reads every event.
func BenchmarkParseAttributes(b *testing.B) {
	p := benchUsage()
	e, err := events.New(events.TypeBillingUsage, tenantA, p.EventSubject(), p, base.Add(time.Millisecond), traceparnt)
	if err != nil {
		b.Fatal(err)
	}
	raw, err := e.MarshalJSON()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := events.ParseAttributes(raw); err != nil {
			b.Fatal(err)
		}
	}
}
