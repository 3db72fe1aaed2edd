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

// completedRecord returns the outbox record of the n-th invocation.completed of a test, built
// with events.NewRecord as the invoke path builds it.
func completedRecord(t *testing.T, n int) events.OutboxRecord {
	t.Helper()
	p := events.InvocationCompleted{
		InvocationID: fmt.Sprintf("inv_%06d", n), Tenant: tenant, Capability: "text.summarize",
		Status: 200, Outcome: events.InvocationOK, Attempts: 1, StartedAt: base.UTC(),
	}
	r, err := events.NewRecord(events.TypeInvocationCompleted, tenant, p.EventSubject(), p, base, "")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestRecordOutbox: records the caller built are written byte for byte, in order and in the
// same batches as usage records.
func TestRecordOutbox(t *testing.T) {
	eachBackend(t, func(t *testing.T, real realStore) {
		_, opts := newMetrics(t)
		opts.Batch = 3
		r := newRecorder(t, real, opts)
		u, err := usage(1).Record()
		if err != nil {
			t.Fatal(err)
		}
		recs := []events.OutboxRecord{completedRecord(t, 1), u, completedRecord(t, 2), completedRecord(t, 3)}
		if !r.RecordOutbox(recs[:2]...) || !r.Record(usage(2)) || !r.RecordOutbox(recs[2:]...) {
			t.Fatal("RecordOutbox refused")
		}
		if !r.RecordOutbox() {
			t.Error("RecordOutbox of nothing refused")
		}
		if err := run(t, r)(); err != nil {
			t.Fatalf("Run: %v", err)
		}
		got := outbox(t, real)
		if len(got) != len(recs)+1 {
			t.Fatalf("outbox has %d records, want %d", len(got), len(recs)+1)
		}
		got = append(got[:2], got[3:]...) // the usage Record queued between the two calls
		for i, rec := range got {
			if rec.ID != recs[i].ID || string(rec.Payload) != string(recs[i].Payload) {
				t.Errorf("record %d: %s %s, want %s %s", i, rec.ID, rec.Payload, recs[i].ID, recs[i].Payload)
			}
		}
	})
}

// TestRecordOutboxRefusals: records that do not all fit, an invalid record (which the store
// would refuse, stalling its batch) and records after shutdown are refused as a whole and
// counted, and none of them is written.
func TestRecordOutboxRefusals(t *testing.T) {
	s := openSQLite(t)
	m, opts := newMetrics(t)
	opts.Queue = 3
	r := newRecorder(t, s, opts)
	first, second := completedRecord(t, 1), completedRecord(t, 2)
	if !r.RecordOutbox(first, second) {
		t.Fatal("RecordOutbox of two refused")
	}
	if r.RecordOutbox(completedRecord(t, 3), completedRecord(t, 4)) {
		t.Error("RecordOutbox accepted two records with room for one")
	}
	if got := m.counter(t, "nops_billing_usage_dropped_total", billing.ReasonQueueFull); got != 2 {
		t.Errorf("dropped{reason=queue_full} = %d, want 2", got)
	}
	bad := completedRecord(t, 5)
	bad.Tenant = "ten.bad"
	if r.RecordOutbox(bad) {
		t.Error("RecordOutbox accepted an invalid record")
	}
	if got := m.counter(t, "nops_billing_usage_dropped_total", billing.ReasonInvalid); got != 1 {
		t.Errorf("dropped{reason=invalid} = %d, want 1", got)
	}
	stop := run(t, r)
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if r.RecordOutbox(completedRecord(t, 6)) {
		t.Error("RecordOutbox accepted a record after Run returned")
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

// TestUsageRecord: a usage's record is its event's (events.NewRecord is New then Outbox).
func TestUsageRecord(t *testing.T) {
	u := usage(1)
	r, err := u.Record()
	if err != nil {
		t.Fatal(err)
	}
	e, err := u.Event()
	if err != nil {
		t.Fatal(err)
	}
	e.ID = r.ID
	want, err := e.Outbox()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, r); diff != "" {
		t.Errorf("record (-Event and Outbox +Record):\n%s", diff)
	}
	bad := usage(2)
	bad.Status = 0
	if _, err := bad.Record(); err == nil {
		t.Error("Record of a usage without status")
	}
}
