package sqlite

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/events"
	"github.com/nops-kernel/nops/internal/events/eventstest"
	"github.com/nops-kernel/nops/internal/store/storetest"
)

// outboxVersion is the migration that creates the outbox table.
const outboxVersion = 7

func TestOutboxConformance(t *testing.T) {
	eventstest.RunOutbox(t, func(t *testing.T) events.OutboxStore { return openMigrated(t, Config{}) })
}

// TestOutboxTransactions runs the shared transactional outbox checks on SQLite.
func TestOutboxTransactions(t *testing.T) {
	storetest.RunOutboxTransactions(t, func(t *testing.T) storetest.OutboxTxStore { return openMigrated(t, Config{}) }, outboxBatch,
		func(ctx context.Context, s storetest.OutboxTxStore) (int, error) {
			var n int
			err := s.(*Store).reader.QueryRowContext(ctx, `SELECT count(*) FROM outbox`).Scan(&n)
			return n, err
		})
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
		{"purge", purgeOutboxQuery, []any{formatTime(storetest.OutboxBase), outboxBatch}, "USING COVERING INDEX outbox_published"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plan := queryPlan(t, s, tt.query, tt.args...)
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
