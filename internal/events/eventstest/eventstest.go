// Package eventstest is the conformance suite of events.OutboxStore: each storage adapter runs
// RunOutbox from its tests (through internal/store/storetest), so the SQLite and PostgreSQL
// outboxes behave as the domains that write them and the bus relay that drains them expect.
// Only tests import eventstest.
package eventstest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/events"
)

// base is a fixed instant with nanoseconds, in a zone other than UTC, so the suite sees adapters
// normalise both: times come back in UTC at microsecond precision (PostgreSQL's).
var base = time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.FixedZone("UTC+2", 2*60*60))

// stored is what an adapter returns for a time it was given.
func stored(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// RunOutbox runs the suite. open must return a fresh, empty outbox on a database no other test
// uses, and release it through t.Cleanup. The store methods are called without a transaction in
// ctx, so each runs on its own.
func RunOutbox(t *testing.T, open func(t *testing.T) events.OutboxStore) {
	t.Run("round trip", func(t *testing.T) { t.Parallel(); testRoundTrip(t, open(t)) })
	t.Run("insertion order", func(t *testing.T) { t.Parallel(); testInsertionOrder(t, open(t)) })
	t.Run("limit", func(t *testing.T) { t.Parallel(); testLimit(t, open(t)) })
	t.Run("duplicate id", func(t *testing.T) { t.Parallel(); testDuplicate(t, open(t)) })
	t.Run("invalid record", func(t *testing.T) { t.Parallel(); testInvalid(t, open(t)) })
	t.Run("mark published", func(t *testing.T) { t.Parallel(); testMarkPublished(t, open(t)) })
	t.Run("failures", func(t *testing.T) { t.Parallel(); testFailures(t, open(t)) })
	t.Run("backlog", func(t *testing.T) { t.Parallel(); testBacklog(t, open(t)) })
	t.Run("purge", func(t *testing.T) { t.Parallel(); testPurge(t, open(t)) })
	t.Run("concurrent writers", func(t *testing.T) { t.Parallel(); testConcurrent(t, open(t)) })
}

// record returns the outbox record of a real heartbeat event of agent n at time at.
func record(t *testing.T, n int, at time.Time) events.OutboxRecord {
	t.Helper()
	agent := fmt.Sprintf("agt_%04d", n)
	p := events.AgentHeartbeat{AgentID: agent, Tenant: "ten_suite", HeartbeatAt: at.UTC()}
	e, err := events.New(events.TypeAgentHeartbeat, p.Tenant, events.AgentSubject(agent), p, at, "")
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	r, err := e.Outbox()
	if err != nil {
		t.Fatalf("Outbox: %v", err)
	}
	return r
}

func add(t *testing.T, s events.OutboxStore, rs ...events.OutboxRecord) {
	t.Helper()
	for _, r := range rs {
		if err := s.AddToOutbox(t.Context(), r); err != nil {
			t.Fatalf("AddToOutbox(%s): %v", r.ID, err)
		}
	}
}

func pending(t *testing.T, s events.OutboxStore, limit int) []events.OutboxRecord {
	t.Helper()
	got, err := s.PendingOutbox(t.Context(), limit)
	if err != nil {
		t.Fatalf("PendingOutbox(%d): %v", limit, err)
	}
	return got
}

// expect checks that got holds want (as stored) in order, with Seq assigned and increasing, and
// times in UTC.
func expect(t *testing.T, got []events.OutboxRecord, want ...events.OutboxRecord) {
	t.Helper()
	var prev int64
	for i, r := range got {
		if r.Seq <= prev {
			t.Errorf("record %d: Seq %d after %d, want increasing and positive", i, r.Seq, prev)
		}
		prev = r.Seq
		if r.CreatedAt.Location() != time.UTC {
			t.Errorf("record %d: CreatedAt %v not in UTC", i, r.CreatedAt)
		}
	}
	w := make([]events.OutboxRecord, len(want))
	for i, r := range want {
		r.CreatedAt = stored(r.CreatedAt)
		if i < len(got) {
			r.Seq = got[i].Seq
		}
		w[i] = r
	}
	if diff := cmp.Diff(w, got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("pending records (-want +got):\n%s", diff)
	}
}

func ids(rs ...events.OutboxRecord) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.ID
	}
	return out
}

func testRoundTrip(t *testing.T, s events.OutboxStore) {
	if got := pending(t, s, 10); len(got) != 0 {
		t.Fatalf("fresh outbox holds %d records", len(got))
	}
	r1, r2 := record(t, 1, base), record(t, 2, base.Add(time.Millisecond))
	add(t, s, r1, r2)
	got := pending(t, s, 10)
	expect(t, got, r1, r2)
	// Records are copies: changing one changes nothing stored.
	got[0].Payload[0] = 'X'
	expect(t, pending(t, s, 10), r1, r2)
}

func testInsertionOrder(t *testing.T, s events.OutboxStore) {
	// Replicas' clocks disagree: the record committed first goes first, whatever its time.
	late, early := record(t, 1, base.Add(time.Hour)), record(t, 2, base)
	add(t, s, late, early)
	expect(t, pending(t, s, 10), late, early)
}

func testLimit(t *testing.T, s events.OutboxStore) {
	var rs []events.OutboxRecord
	for i := range 5 {
		rs = append(rs, record(t, i, base.Add(time.Duration(i)*time.Second)))
	}
	add(t, s, rs...)
	expect(t, pending(t, s, 2), rs[:2]...)
	expect(t, pending(t, s, 5), rs...)
	expect(t, pending(t, s, 100), rs...)
	for _, limit := range []int{0, -1} {
		if _, err := s.PendingOutbox(t.Context(), limit); !errs.Is(err, errs.Invalid) {
			t.Errorf("PendingOutbox(%d): %v, want errs.Invalid", limit, err)
		}
	}
}

func testDuplicate(t *testing.T, s events.OutboxStore) {
	r := record(t, 1, base)
	add(t, s, r)
	if err := s.AddToOutbox(t.Context(), r); !errs.Is(err, errs.Conflict) {
		t.Errorf("AddToOutbox of the same record: %v, want errs.Conflict", err)
	}
	other := record(t, 2, base)
	other.ID = r.ID
	if err := s.AddToOutbox(t.Context(), other); !errs.Is(err, errs.Conflict) {
		t.Errorf("AddToOutbox of another record with the same id: %v, want errs.Conflict", err)
	}
	expect(t, pending(t, s, 10), r)
}

func testInvalid(t *testing.T, s events.OutboxStore) {
	for name, change := range map[string]func(*events.OutboxRecord){
		"no id":        func(r *events.OutboxRecord) { r.ID = "" },
		"no payload":   func(r *events.OutboxRecord) { r.Payload = nil },
		"seq set":      func(r *events.OutboxRecord) { r.Seq = 9 },
		"attempts set": func(r *events.OutboxRecord) { r.Attempts = 1 },
	} {
		r := record(t, 1, base)
		change(&r)
		if err := s.AddToOutbox(t.Context(), r); !errs.Is(err, errs.Invalid) {
			t.Errorf("%s: AddToOutbox: %v, want errs.Invalid", name, err)
		}
	}
	expect(t, pending(t, s, 10))
}

func testMarkPublished(t *testing.T, s events.OutboxStore) {
	r1, r2, r3 := record(t, 1, base), record(t, 2, base), record(t, 3, base)
	add(t, s, r1, r2, r3)
	ctx := t.Context()
	if err := s.MarkPublished(ctx, append(ids(r1, r3), "evt_unknown"), base.Add(time.Second)); err != nil {
		t.Fatalf("MarkPublished: %v", err)
	}
	expect(t, pending(t, s, 10), r2)
	if err := s.MarkPublished(ctx, nil, base); err != nil {
		t.Errorf("MarkPublished of no ids: %v", err)
	}
	if err := s.MarkPublished(ctx, ids(r1), base.Add(time.Minute)); err != nil {
		t.Errorf("MarkPublished again: %v", err)
	}
	expect(t, pending(t, s, 10), r2)
}

func testFailures(t *testing.T, s events.OutboxStore) {
	r1, r2, r3 := record(t, 1, base), record(t, 2, base), record(t, 3, base)
	add(t, s, r1, r2, r3)
	ctx := t.Context()
	for _, batch := range [][]string{ids(r1), ids(r1), append(ids(r1, r2), "evt_unknown"), nil} {
		if err := s.RecordOutboxFailure(ctx, batch); err != nil {
			t.Fatalf("RecordOutboxFailure(%v): %v", batch, err)
		}
	}
	r1.Attempts, r2.Attempts = 3, 1
	expect(t, pending(t, s, 10), r1, r2, r3)
}

func testBacklog(t *testing.T, s events.OutboxStore) {
	ctx := t.Context()
	backlog := func(want events.Backlog) {
		t.Helper()
		got, err := s.OutboxBacklog(ctx)
		if err != nil {
			t.Fatalf("OutboxBacklog: %v", err)
		}
		if !got.Oldest.IsZero() && got.Oldest.Location() != time.UTC {
			t.Errorf("Oldest %v not in UTC", got.Oldest)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("backlog (-want +got):\n%s", diff)
		}
	}
	backlog(events.Backlog{})
	late, early := record(t, 1, base.Add(time.Hour)), record(t, 2, base)
	add(t, s, late, early)
	backlog(events.Backlog{Pending: 2, Oldest: stored(base)})
	if err := s.MarkPublished(ctx, ids(early), base.Add(2*time.Hour)); err != nil {
		t.Fatalf("MarkPublished: %v", err)
	}
	backlog(events.Backlog{Pending: 1, Oldest: stored(base.Add(time.Hour))})
	if err := s.MarkPublished(ctx, ids(late), base.Add(2*time.Hour)); err != nil {
		t.Fatalf("MarkPublished: %v", err)
	}
	backlog(events.Backlog{})
}

func testPurge(t *testing.T, s events.OutboxStore) {
	ctx := t.Context()
	r1, r2, r3, r4 := record(t, 1, base), record(t, 2, base), record(t, 3, base), record(t, 4, base)
	add(t, s, r1, r2, r3, r4)
	// Whole microseconds, so the boundaries below do not depend on how an adapter rounds.
	t1, t2 := stored(base).Add(time.Minute), stored(base).Add(2*time.Minute)
	for _, m := range []struct {
		ids []string
		at  time.Time
	}{
		{ids(r1), t1}, {ids(r2), t2},
		{ids(r4), t1}, {ids(r4), t2.Add(time.Hour)}, // the first publication time stays
	} {
		if err := s.MarkPublished(ctx, m.ids, m.at); err != nil {
			t.Fatalf("MarkPublished: %v", err)
		}
	}
	purge := func(before time.Time, want int64) {
		t.Helper()
		got, err := s.PurgePublishedOutbox(ctx, before)
		if err != nil {
			t.Fatalf("PurgePublishedOutbox: %v", err)
		}
		if got != want {
			t.Errorf("PurgePublishedOutbox(%v) = %d, want %d", before, got, want)
		}
	}
	purge(t1, 0)                       // strictly before
	purge(t1.Add(time.Microsecond), 2) // r1 and r4
	purge(t1.Add(time.Microsecond), 0)
	purge(base.Add(24*time.Hour), 1) // r2; r3 is unpublished, however old
	expect(t, pending(t, s, 10), r3)
}

func testConcurrent(t *testing.T, s events.OutboxStore) {
	const writers, each = 8, 10
	recs := make([][]events.OutboxRecord, writers)
	for w := range writers {
		for i := range each {
			recs[w] = append(recs[w], record(t, w*100+i, base.Add(time.Duration(i)*time.Millisecond)))
		}
	}
	var wg sync.WaitGroup
	errc := make(chan error, writers*each)
	for w := range writers {
		wg.Go(func() {
			for _, r := range recs[w] {
				if err := s.AddToOutbox(t.Context(), r); err != nil {
					errc <- fmt.Errorf("AddToOutbox(%s): %w", r.ID, err)
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	got := pending(t, s, writers*each+1)
	if len(got) != writers*each {
		t.Fatalf("PendingOutbox returned %d records, want %d", len(got), writers*each)
	}
	for i := 1; i < len(got); i++ {
		if got[i].Seq <= got[i-1].Seq {
			t.Fatalf("Seq %d listed after %d, want strictly increasing", got[i].Seq, got[i-1].Seq)
		}
	}
	// One writer stands for one resource, whose changes are serialised: its records keep their
	// order among everyone's.
	pos := map[string]int{}
	for i, r := range got {
		pos[r.ID] = i
	}
	for w := range writers {
		for i := 1; i < each; i++ {
			if pos[recs[w][i].ID] < pos[recs[w][i-1].ID] {
				t.Errorf("writer %d: record %d listed before record %d", w, i, i-1)
			}
		}
	}
}
