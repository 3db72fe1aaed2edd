package sqlite

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/events"
	"github.com/nops-kernel/nops/internal/events/eventstest"
)

// outboxVersion is the migration that creates the outbox table.
const outboxVersion = 7

// outboxBase is a fixed instant with microsecond precision, so records round-trip unchanged.
var outboxBase = time.Date(2025, 3, 14, 15, 9, 26, 535897000, time.UTC)

func TestOutboxConformance(t *testing.T) {
	eventstest.RunOutbox(t, func(t *testing.T) events.OutboxStore { return openMigrated(t, Config{}) })
}

// newOutboxRecord returns the outbox record of a real heartbeat event of agent n.
func newOutboxRecord(t *testing.T, n int) events.OutboxRecord {
	t.Helper()
	agent := fmt.Sprintf("agt_%04d", n)
	at := outboxBase.Add(time.Duration(n) * time.Millisecond)
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

func outboxIDs(rs []events.OutboxRecord) []string {
	ids := make([]string, len(rs))
	for i, r := range rs {
		ids[i] = r.ID
	}
	return ids
}

func mustPending(t *testing.T, ctx context.Context, s *Store, limit int) []events.OutboxRecord {
	t.Helper()
	got, err := s.PendingOutbox(ctx, limit)
	if err != nil {
		t.Fatalf("PendingOutbox: %v", err)
	}
	return got
}

// TestOutboxJoinsTransaction checks that every outbox method called with InTx's context runs in
// that transaction: the event commits or rolls back with the change it describes, and so does
// the relay's bookkeeping.
func TestOutboxJoinsTransaction(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name string
		// fn runs in a transaction on a store holding committed; its error is InTx's.
		fn          func(ctx context.Context, s *Store, committed, added events.OutboxRecord) error
		wantErr     error
		wantPending func(committed, added events.OutboxRecord) []string
	}{
		{
			name: "a failing transaction leaves no row",
			fn: func(ctx context.Context, s *Store, _, added events.OutboxRecord) error {
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
			fn: func(ctx context.Context, s *Store, _, added events.OutboxRecord) error {
				return s.AddToOutbox(ctx, added)
			},
			wantPending: func(c, a events.OutboxRecord) []string { return []string{c.ID, a.ID} },
		},
		{
			name: "relay updates roll back",
			fn: func(ctx context.Context, s *Store, committed, _ events.OutboxRecord) error {
				if err := s.RecordOutboxFailure(ctx, []string{committed.ID}); err != nil {
					return err
				}
				if err := s.MarkPublished(ctx, []string{committed.ID}, outboxBase); err != nil {
					return err
				}
				if n, err := s.PurgePublishedOutbox(ctx, outboxBase.Add(time.Hour)); err != nil || n != 1 {
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
			s := openMigrated(t, Config{})
			ctx := t.Context()
			committed, added := newOutboxRecord(t, 1), newOutboxRecord(t, 2)
			if err := s.AddToOutbox(ctx, committed); err != nil {
				t.Fatalf("AddToOutbox: %v", err)
			}
			err := s.InTx(ctx, func(ctx context.Context) error { return tt.fn(ctx, s, committed, added) })
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("InTx = %v, want %v", err, tt.wantErr)
			}
			got := mustPending(t, ctx, s, 10)
			if diff := cmp.Diff(tt.wantPending(committed, added), outboxIDs(got)); diff != "" {
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

// TestOutboxConcurrentTransactions commits one event from each of 50 goroutines, each in its own
// transaction, as 50 concurrent requests do.
func TestOutboxConcurrentTransactions(t *testing.T) {
	s := openMigrated(t, Config{})
	ctx := t.Context()
	const writers = 50
	want := make([]events.OutboxRecord, writers)
	for i := range want {
		want[i] = newOutboxRecord(t, i)
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
	got := mustPending(t, ctx, s, writers+1)
	gotIDs, wantIDs := outboxIDs(got), outboxIDs(want)
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

// TestOutboxBatches gives the relay's methods more ids, and the purge more rows, than one
// statement handles, with every id listed twice.
func TestOutboxBatches(t *testing.T) {
	for _, n := range []int{outboxBatch, 2*outboxBatch + 7} {
		t.Run(fmt.Sprintf("%d records", n), func(t *testing.T) {
			s := openMigrated(t, Config{})
			ctx := t.Context()
			recs := make([]events.OutboxRecord, n)
			for i := range recs {
				recs[i] = newOutboxRecord(t, i)
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
			ids := outboxIDs(recs)
			twice := append(slices.Clone(ids), ids...)

			if err := s.RecordOutboxFailure(ctx, twice); err != nil {
				t.Fatalf("RecordOutboxFailure: %v", err)
			}
			got := mustPending(t, ctx, s, n+1)
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
			if err := s.MarkPublished(ctx, published, outboxBase.Add(time.Minute)); err != nil {
				t.Fatalf("MarkPublished: %v", err)
			}
			if diff := cmp.Diff(ids[n-1:], outboxIDs(mustPending(t, ctx, s, n+1))); diff != "" {
				t.Fatalf("pending ids after MarkPublished (-want +got):\n%s", diff)
			}
			purged, err := s.PurgePublishedOutbox(ctx, outboxBase.Add(time.Hour))
			if err != nil {
				t.Fatalf("PurgePublishedOutbox: %v", err)
			}
			if purged != int64(n-1) {
				t.Errorf("purged %d records, want %d", purged, n-1)
			}
			var rows int
			if err := s.reader.QueryRowContext(ctx, `SELECT count(*) FROM outbox`).Scan(&rows); err != nil {
				t.Fatalf("count outbox rows: %v", err)
			}
			if rows != 1 {
				t.Errorf("%d rows left in the outbox, want 1", rows)
			}
		})
	}
}

// TestOutboxSeqNeverReused purges the newest record and adds another: a rowid table without
// AUTOINCREMENT would hand the new record the purged one's seq.
func TestOutboxSeqNeverReused(t *testing.T) {
	s := openMigrated(t, Config{})
	ctx := t.Context()
	first, second := newOutboxRecord(t, 1), newOutboxRecord(t, 2)
	if err := s.AddToOutbox(ctx, first); err != nil {
		t.Fatalf("AddToOutbox: %v", err)
	}
	firstSeq := mustPending(t, ctx, s, 1)[0].Seq
	if err := s.MarkPublished(ctx, []string{first.ID}, outboxBase); err != nil {
		t.Fatalf("MarkPublished: %v", err)
	}
	if n, err := s.PurgePublishedOutbox(ctx, outboxBase.Add(time.Second)); err != nil || n != 1 {
		t.Fatalf("PurgePublishedOutbox = %d, %v; want 1", n, err)
	}
	if err := s.AddToOutbox(ctx, second); err != nil {
		t.Fatalf("AddToOutbox: %v", err)
	}
	if got := mustPending(t, ctx, s, 1)[0].Seq; got <= firstSeq {
		t.Errorf("Seq after purging %d is %d, want greater", firstSeq, got)
	}
}

// TestOutboxQueryPlans checks that the relay's reads and the purge use the partial indexes rather
// than scanning the table, which holds every published record until it is purged.
func TestOutboxQueryPlans(t *testing.T) {
	s := openMigrated(t, Config{})
	tests := []struct {
		name  string
		query string
		args  []any
		want  string
	}{
		{"pending", pendingOutboxQuery, []any{10}, "USING INDEX outbox_pending"},
		{"backlog", outboxBacklogQuery, nil, "USING INDEX outbox_pending"},
		{"purge", purgeOutboxQuery, []any{formatTime(outboxBase), outboxBatch}, "USING COVERING INDEX outbox_published"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rows, err := s.reader.QueryContext(t.Context(), "EXPLAIN QUERY PLAN "+tt.query, tt.args...)
			if err != nil {
				t.Fatalf("EXPLAIN QUERY PLAN: %v", err)
			}
			defer rows.Close()
			var plan []string
			for rows.Next() {
				var (
					id, parent, unused int
					detail             string
				)
				if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
					t.Fatalf("scan plan: %v", err)
				}
				plan = append(plan, detail)
			}
			if err := rows.Err(); err != nil {
				t.Fatalf("read plan: %v", err)
			}
			if !slices.ContainsFunc(plan, func(d string) bool { return strings.Contains(d, tt.want) }) {
				t.Errorf("plan %q does not contain %q", plan, tt.want)
			}
			for _, d := range plan {
				if d == "SCAN outbox" {
					t.Errorf("plan %q scans the table", plan)
				}
			}
		})
	}
}

// TestOutboxMigrationDown reverts migrations down to and including the outbox's, and back up.
func TestOutboxMigrationDown(t *testing.T) {
	s := openMigrated(t, Config{})
	ctx := t.Context()
	if err := s.AddToOutbox(ctx, newOutboxRecord(t, 1)); err != nil {
		t.Fatalf("AddToOutbox: %v", err)
	}
	applied := func() bool {
		t.Helper()
		status, err := s.MigrationStatus(ctx)
		if err != nil {
			t.Fatalf("MigrationStatus: %v", err)
		}
		for _, m := range status {
			if m.Version == outboxVersion {
				return m.Applied
			}
		}
		t.Fatalf("no migration %d in %+v", outboxVersion, status)
		return false
	}
	// Later migrations, if any, are reverted first.
	for applied() {
		if err := s.MigrateDown(ctx); err != nil {
			t.Fatalf("MigrateDown: %v", err)
		}
	}
	if _, err := s.PendingOutbox(ctx, 1); err == nil {
		t.Fatal("PendingOutbox after reverting the outbox migration succeeded, want an error")
	}
	var leftovers int
	if err := s.reader.QueryRowContext(ctx,
		`SELECT count(*) FROM sqlite_schema WHERE tbl_name = 'outbox'`).Scan(&leftovers); err != nil {
		t.Fatalf("read schema: %v", err)
	}
	if leftovers != 0 {
		t.Errorf("%d schema objects of outbox left after its down migration", leftovers)
	}

	if err := s.MigrateUp(ctx); err != nil {
		t.Fatalf("MigrateUp: %v", err)
	}
	if got := mustPending(t, ctx, s, 10); len(got) != 0 {
		t.Errorf("%d pending records in the recreated outbox, want 0", len(got))
	}
	r := newOutboxRecord(t, 2)
	if err := s.AddToOutbox(ctx, r); err != nil {
		t.Fatalf("AddToOutbox after MigrateUp: %v", err)
	}
	if diff := cmp.Diff([]string{r.ID}, outboxIDs(mustPending(t, ctx, s, 10))); diff != "" {
		t.Errorf("pending ids (-want +got):\n%s", diff)
	}
}
