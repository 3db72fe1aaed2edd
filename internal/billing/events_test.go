package billing_test

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/billing"
	"github.com/nops-kernel/nops/internal/events"
)

// completed returns the n-th invocation.completed event of a test.
func completed(t *testing.T, n int) events.Event {
	t.Helper()
	p := events.InvocationCompleted{
		InvocationID: fmt.Sprintf("inv_%06d", n), Tenant: tenant, Capability: "text.summarize",
		Status: 200, Outcome: events.InvocationOK, Attempts: 1, StartedAt: base.UTC(),
	}
	e, err := events.New(events.TypeInvocationCompleted, tenant, p.EventSubject(), p, base, "")
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestRecordEvents: events the caller built are written byte for byte, in order and in the same
// batches as usage records.
func TestRecordEvents(t *testing.T) {
	eachBackend(t, func(t *testing.T, real realStore) {
		_, opts := newMetrics(t)
		opts.Batch = 3
		r := newRecorder(t, real, opts)
		u, _ := usage(1).Event()
		evs := []events.Event{completed(t, 1), u, completed(t, 2), completed(t, 3)}
		if !r.RecordEvents(evs[:2]...) || !r.RecordEvents(evs[2:]...) {
			t.Fatal("RecordEvents refused")
		}
		if !r.RecordEvents() {
			t.Error("RecordEvents of nothing refused")
		}
		if err := run(t, r)(); err != nil {
			t.Fatalf("Run: %v", err)
		}
		var got, want []string
		for _, rec := range outbox(t, real) {
			got = append(got, rec.ID)
		}
		for _, e := range evs {
			want = append(want, e.ID)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("outbox ids (-want +got):\n%s", diff)
		}
		for i, rec := range outbox(t, real) {
			b, _ := evs[i].MarshalJSON()
			if string(rec.Payload) != string(b) {
				t.Errorf("record %d payload %s, want %s", i, rec.Payload, b)
			}
		}
	})
}

// TestRecordEventsRefusals: events that do not all fit, an invalid event, and events after
// shutdown are refused as a whole and counted, and none of them is written.
func TestRecordEventsRefusals(t *testing.T) {
	s := openSQLite(t)
	m, opts := newMetrics(t)
	opts.Queue = 3
	r := newRecorder(t, s, opts)
	first, second := completed(t, 1), completed(t, 2)
	if !r.RecordEvents(first, second) {
		t.Fatal("RecordEvents of two refused")
	}
	if r.RecordEvents(completed(t, 3), completed(t, 4)) {
		t.Error("RecordEvents accepted two events with room for one")
	}
	if got := m.counter(t, "nops_billing_usage_dropped_total", billing.ReasonQueueFull); got != 2 {
		t.Errorf("dropped{reason=queue_full} = %d, want 2", got)
	}
	bad := completed(t, 5)
	bad.Tenant = "ten.bad"
	if r.RecordEvents(bad) {
		t.Error("RecordEvents accepted an invalid event")
	}
	if got := m.counter(t, "nops_billing_usage_dropped_total", billing.ReasonInvalid); got != 1 {
		t.Errorf("dropped{reason=invalid} = %d, want 1", got)
	}
	stop := run(t, r)
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if r.RecordEvents(completed(t, 6)) {
		t.Error("RecordEvents accepted an event after Run returned")
	}
	if got := m.counter(t, "nops_billing_usage_dropped_total", billing.ReasonStopped); got != 1 {
		t.Errorf("dropped{reason=stopped} = %d, want 1", got)
	}
	var ids []string
	for _, rec := range outbox(t, s) {
		ids = append(ids, rec.ID)
	}
	if diff := cmp.Diff([]string{first.ID, second.ID}, ids); diff != "" {
		t.Errorf("outbox ids (-want +got):\n%s", diff)
	}
}
