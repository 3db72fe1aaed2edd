package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/events"
)

// OutboxTxStore is an outbox store that can bind its writes to a transaction.
type OutboxTxStore interface {
	events.OutboxStore
	InTx(ctx context.Context, fn func(ctx context.Context) error) error
}

// OutboxBase is a fixed instant with microsecond precision, so records round-trip unchanged.
var OutboxBase = time.Date(2025, 3, 14, 15, 9, 26, 535897000, time.UTC)

// RunOutboxTransactions checks what events/eventstest cannot, as it knows no transactions: the
// outbox joins InTx, holds under concurrent transactions, batches large id lists (batch is the
// adapter's statement batch size), and never reuses a seq. countRows counts every row of the
// outbox table, published or not.
func RunOutboxTransactions(t *testing.T, open func(*testing.T) OutboxTxStore, batch int, countRows func(context.Context, OutboxTxStore) (int, error)) {
	t.Run("joins transaction", func(t *testing.T) { testOutboxJoinsTransaction(t, open) })
	t.Run("concurrent transactions", func(t *testing.T) { testOutboxConcurrentTransactions(t, open) })
	t.Run("batches", func(t *testing.T) { testOutboxBatches(t, open, batch, countRows) })
	t.Run("seq never reused", func(t *testing.T) { testOutboxSeqNeverReused(t, open) })
}

// OutboxRecord returns the outbox record of a real heartbeat event of agent n.
func OutboxRecord(t *testing.T, n int) events.OutboxRecord {
	t.Helper()
	agent := fmt.Sprintf("agt_%04d", n)
	at := OutboxBase.Add(time.Duration(n) * time.Millisecond)
	p := events.AgentHeartbeat{AgentID: agent, Tenant: "ten_outbox", HeartbeatAt: at}
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

// OutboxIDs lists the ids of rs.
func OutboxIDs(rs []events.OutboxRecord) []string {
	ids := make([]string, len(rs))
	for i, r := range rs {
		ids[i] = r.ID
	}
	return ids
}

// PendingOutbox returns the pending records or fails the test.
func PendingOutbox(t *testing.T, ctx context.Context, s events.OutboxStore, limit int) []events.OutboxRecord {
	t.Helper()
	got, err := s.PendingOutbox(ctx, limit)
	if err != nil {
		t.Fatalf("PendingOutbox: %v", err)
	}
	return got
}

// testOutboxJoinsTransaction checks that every outbox method called with InTx's context runs in
// that transaction: the event commits or rolls back with the change it describes, and so does
// the relay's bookkeeping.
func testOutboxJoinsTransaction(t *testing.T, open func(*testing.T) OutboxTxStore) {
	boom := errors.New("boom")
	tests := []struct {
		name string
		// fn runs in a transaction on a store holding committed; its error is InTx's.
		fn          func(ctx context.Context, s OutboxTxStore, committed, added events.OutboxRecord) error
		wantErr     error
		wantPending func(committed, added events.OutboxRecord) []string
	}{
		{
			name: "a failing transaction leaves no row",
			fn: func(ctx context.Context, s OutboxTxStore, _, added events.OutboxRecord) error {
				if err := s.AddToOutbox(ctx, added); err != nil {
					return err
				}
				// The transaction sees its own record before it rolls back.
				got, err := s.PendingOutbox(ctx, 10)
				if err != nil || len(got) != 2 {
					return fmt.Errorf("pending inside the transaction: %d records, %v; want 2", len(got), err)
				}
				return boom
			},
			wantErr:     boom,
			wantPending: func(c, _ events.OutboxRecord) []string { return []string{c.ID} },
		},
		{
			name: "a committed transaction leaves exactly one row",
			fn: func(ctx context.Context, s OutboxTxStore, _, added events.OutboxRecord) error {
				return s.AddToOutbox(ctx, added)
			},
			wantPending: func(c, a events.OutboxRecord) []string { return []string{c.ID, a.ID} },
		},
		{
			name: "relay updates roll back",
			fn: func(ctx context.Context, s OutboxTxStore, committed, _ events.OutboxRecord) error {
				if err := s.RecordOutboxFailure(ctx, []string{committed.ID}); err != nil {
					return err
				}
				if err := s.MarkPublished(ctx, []string{committed.ID}, OutboxBase); err != nil {
					return err
				}
				if n, err := s.PurgePublishedOutbox(ctx, OutboxBase.Add(time.Hour)); err != nil || n != 1 {
					return fmt.Errorf("purge inside the transaction = %d, %v; want 1", n, err)
				}
				return boom
			},
			wantErr:     boom,
			wantPending: func(c, _ events.OutboxRecord) []string { return []string{c.ID} },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			ctx := t.Context()
			committed, added := OutboxRecord(t, 1), OutboxRecord(t, 2)
			if err := s.AddToOutbox(ctx, committed); err != nil {
				t.Fatalf("AddToOutbox: %v", err)
			}
			err := s.InTx(ctx, func(ctx context.Context) error { return tt.fn(ctx, s, committed, added) })
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("InTx = %v, want %v", err, tt.wantErr)
			}
			got := PendingOutbox(t, ctx, s, 10)
			if diff := cmp.Diff(tt.wantPending(committed, added), OutboxIDs(got)); diff != "" {
				t.Errorf("pending ids (-want +got):\n%s", diff)
			}
			for _, r := range got {
				if r.Attempts != 0 {
					t.Errorf("record %s: %d attempts after the rollback, want 0", r.ID, r.Attempts)
				}
			}
		})
	}
}

// testOutboxConcurrentTransactions commits one event from each of 50 goroutines, each in its own
// transaction, as 50 concurrent requests do.
func testOutboxConcurrentTransactions(t *testing.T, open func(*testing.T) OutboxTxStore) {
	s := open(t)
	ctx := t.Context()
	const writers = 50
	want := make([]events.OutboxRecord, writers)
	for i := range want {
		want[i] = OutboxRecord(t, i)
	}
	var wg sync.WaitGroup
	errc := make(chan error, writers)
	for _, r := range want {
		wg.Go(func() {
			if err := s.InTx(ctx, func(ctx context.Context) error { return s.AddToOutbox(ctx, r) }); err != nil {
				errc <- fmt.Errorf("InTx adding %s: %w", r.ID, err)
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	got := PendingOutbox(t, ctx, s, writers+1)
	gotIDs, wantIDs := OutboxIDs(got), OutboxIDs(want)
	slices.Sort(gotIDs)
	slices.Sort(wantIDs)
	if diff := cmp.Diff(wantIDs, gotIDs); diff != "" {
		t.Errorf("pending ids (-want +got):\n%s", diff)
	}
	for i := 1; i < len(got); i++ {
		if got[i].Seq <= got[i-1].Seq {
			t.Errorf("Seq %d listed after %d, want strictly increasing", got[i].Seq, got[i-1].Seq)
		}
	}
}

// testOutboxBatches gives the relay's methods more ids, and the purge more rows, than one
// statement handles, with every id listed twice.
func testOutboxBatches(t *testing.T, open func(*testing.T) OutboxTxStore, batch int, countRows func(context.Context, OutboxTxStore) (int, error)) {
	for _, n := range []int{batch, 2*batch + 7} {
		t.Run(fmt.Sprintf("%d records", n), func(t *testing.T) {
			s := open(t)
			ctx := t.Context()
			recs := make([]events.OutboxRecord, n)
			for i := range recs {
				recs[i] = OutboxRecord(t, i)
			}
			// One transaction: one commit rather than one fsync per record.
			err := s.InTx(ctx, func(ctx context.Context) error {
				for _, r := range recs {
					if err := s.AddToOutbox(ctx, r); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				t.Fatalf("adding %d records: %v", n, err)
			}
			ids := OutboxIDs(recs)
			twice := append(slices.Clone(ids), ids...)

			if err := s.RecordOutboxFailure(ctx, twice); err != nil {
				t.Fatalf("RecordOutboxFailure: %v", err)
			}
			got := PendingOutbox(t, ctx, s, n+1)
			if len(got) != n {
				t.Fatalf("%d pending records, want %d", len(got), n)
			}
			for _, r := range got {
				if r.Attempts != 1 {
					t.Fatalf("record %s: %d attempts, want 1 (each id counts once per call)", r.ID, r.Attempts)
				}
			}

			// All but the last one published; the last one stays pending through the purge.
			published := append(slices.Clone(ids[:n-1]), ids[:n-1]...)
			if err := s.MarkPublished(ctx, published, OutboxBase.Add(time.Minute)); err != nil {
				t.Fatalf("MarkPublished: %v", err)
			}
			if diff := cmp.Diff(ids[n-1:], OutboxIDs(PendingOutbox(t, ctx, s, n+1))); diff != "" {
				t.Fatalf("pending ids after MarkPublished (-want +got):\n%s", diff)
			}
			purged, err := s.PurgePublishedOutbox(ctx, OutboxBase.Add(time.Hour))
			if err != nil {
				t.Fatalf("PurgePublishedOutbox: %v", err)
			}
			if purged != int64(n-1) {
				t.Errorf("purged %d records, want %d", purged, n-1)
			}
			rows, err := countRows(ctx, s)
			if err != nil {
				t.Fatalf("count outbox rows: %v", err)
			}
			if rows != 1 {
				t.Errorf("%d rows left in the outbox, want 1", rows)
			}
		})
	}
}

// testOutboxSeqNeverReused purges the newest record and adds another, which must not get the
// purged one's seq (on SQLite, a rowid table without AUTOINCREMENT would hand it out again).
func testOutboxSeqNeverReused(t *testing.T, open func(*testing.T) OutboxTxStore) {
	s := open(t)
	ctx := t.Context()
	first, second := OutboxRecord(t, 1), OutboxRecord(t, 2)
	if err := s.AddToOutbox(ctx, first); err != nil {
		t.Fatalf("AddToOutbox: %v", err)
	}
	firstSeq := PendingOutbox(t, ctx, s, 1)[0].Seq
	if err := s.MarkPublished(ctx, []string{first.ID}, OutboxBase); err != nil {
		t.Fatalf("MarkPublished: %v", err)
	}
	if n, err := s.PurgePublishedOutbox(ctx, OutboxBase.Add(time.Second)); err != nil || n != 1 {
		t.Fatalf("PurgePublishedOutbox = %d, %v; want 1", n, err)
	}
	if err := s.AddToOutbox(ctx, second); err != nil {
		t.Fatalf("AddToOutbox: %v", err)
	}
	if got := PendingOutbox(t, ctx, s, 1)[0].Seq; got <= firstSeq {
		t.Errorf("Seq after purging %d is %d, want greater", firstSeq, got)
	}
}
