package postgres

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/events"
	"github.com/nops-kernel/nops/internal/events/eventstest"
	"github.com/nops-kernel/nops/internal/store/storetest"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

// outboxVersion is the migration that creates the outbox table.
const outboxVersion = 7

// openOutbox opens a migrated store on a fresh database, with enough connections for
// transactions to really run side by side.
func openOutbox(t *testing.T) *Store {
	t.Helper()
	s := openTest(t, Config{URL: services.Postgres(t), MaxConns: 8})
	if err := s.MigrateUp(t.Context()); err != nil {
		t.Fatalf("MigrateUp: %v", err)
	}
	return s
}

func TestOutboxConformance(t *testing.T) {
	eventstest.RunOutbox(t, func(t *testing.T) events.OutboxStore { return openOutbox(t) })
}

// TestOutboxTransactions runs the shared transactional outbox checks on PostgreSQL.
func TestOutboxTransactions(t *testing.T) {
	storetest.RunOutboxTransactions(t, func(t *testing.T) storetest.OutboxTxStore { return openOutbox(t) }, outboxBatch,
		func(ctx context.Context, s storetest.OutboxTxStore) (int, error) {
			var n int
			err := s.(*Store).pool.QueryRow(ctx, `SELECT count(*) FROM outbox`).Scan(&n)
			return n, err
		})
}

// TestOutboxLateCommit holds a transaction that inserted a record open while a second one inserts
// a record, commits, and gets it published: the first record has the lower seq but commits last.
// The relay must still find it pending, which a read of "seq > the last published" would not.
func TestOutboxLateCommit(t *testing.T) {
	s := openOutbox(t)
	ctx := t.Context()
	early, late := storetest.OutboxRecord(t, 1), storetest.OutboxRecord(t, 2)

	inserted, release := make(chan struct{}), make(chan struct{})
	releaseOnce := sync.OnceFunc(func() { close(release) })
	result, done := make(chan error, 1), make(chan struct{})
	go func() {
		defer close(done)
		result <- s.InTx(ctx, func(ctx context.Context) error {
			if err := s.AddToOutbox(ctx, early); err != nil {
				return err
			}
			close(inserted)
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	// However the test ends, the transaction ends and its goroutine returns.
	t.Cleanup(func() { releaseOnce(); <-done })
	select {
	case <-inserted:
	case err := <-result:
		t.Fatalf("the first transaction ended before inserting: %v", err)
	}

	if err := s.InTx(ctx, func(ctx context.Context) error { return s.AddToOutbox(ctx, late) }); err != nil {
		t.Fatalf("second transaction: %v", err)
	}
	got := storetest.PendingOutbox(t, ctx, s, 10)
	if diff := cmp.Diff([]string{late.ID}, storetest.OutboxIDs(got)); diff != "" {
		t.Fatalf("pending ids while the first transaction is open (-want +got):\n%s", diff)
	}
	lastPublished := got[0].Seq
	if err := s.MarkPublished(ctx, []string{late.ID}, storetest.OutboxBase); err != nil {
		t.Fatalf("MarkPublished: %v", err)
	}

	releaseOnce()
	if err := <-result; err != nil {
		t.Fatalf("first transaction: %v", err)
	}
	got = storetest.PendingOutbox(t, ctx, s, 10)
	if diff := cmp.Diff([]string{early.ID}, storetest.OutboxIDs(got)); diff != "" {
		t.Fatalf("pending ids after the first transaction committed (-want +got):\n%s", diff)
	}
	if got[0].Seq >= lastPublished {
		t.Errorf("the late commit got Seq %d, want below the published %d (the case a high-water mark misses)", got[0].Seq, lastPublished)
	}
}

// TestOutboxQueryPlans checks that the relay's reads and the purge can use the partial indexes:
// with sequential scans disabled, the planner picks them only if the queries' conditions imply
// the indexes' own.
func TestOutboxQueryPlans(t *testing.T) {
	s := openOutbox(t)
	tests := []struct {
		name  string
		query string
		args  []any
		want  string
	}{
		{"pending", pendingOutboxQuery, []any{10}, "outbox_pending"},
		{"backlog", outboxBacklogQuery, nil, "outbox_pending"},
		{"purge", purgeOutboxQuery, []any{storetest.OutboxBase, outboxBatch}, "outbox_published"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text := queryPlan(t, s, tt.query, tt.args...)
			if !strings.Contains(text, tt.want) {
				t.Errorf("plan does not use %s:\n%s", tt.want, text)
			}
		})
	}
}

// TestOutboxMigrationDown reverts migrations down to and including the outbox's, and back up.
func TestOutboxMigrationDown(t *testing.T) {
	s := openOutbox(t)
	ctx := t.Context()
	if err := s.AddToOutbox(ctx, storetest.OutboxRecord(t, 1)); err != nil {
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
	if err := s.pool.QueryRow(ctx,
		`SELECT count(*) FROM pg_class WHERE relname IN ('outbox', 'outbox_seq_seq', 'outbox_pending', 'outbox_published')`).Scan(&leftovers); err != nil {
		t.Fatalf("read catalog: %v", err)
	}
	if leftovers != 0 {
		t.Errorf("%d relations of outbox left after its down migration", leftovers)
	}

	if err := s.MigrateUp(ctx); err != nil {
		t.Fatalf("MigrateUp: %v", err)
	}
	if got := storetest.PendingOutbox(t, ctx, s, 10); len(got) != 0 {
		t.Errorf("%d pending records in the recreated outbox, want 0", len(got))
	}
	r := storetest.OutboxRecord(t, 2)
	if err := s.AddToOutbox(ctx, r); err != nil {
		t.Fatalf("AddToOutbox after MigrateUp: %v", err)
	}
	if diff := cmp.Diff([]string{r.ID}, storetest.OutboxIDs(storetest.PendingOutbox(t, ctx, s, 10))); diff != "" {
		t.Errorf("pending ids (-want +got):\n%s", diff)
	}
}
