package sqlite

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/nops-kernel/nops/internal/idempotency"
	"github.com/nops-kernel/nops/internal/store/storetest"
)

// idempotencyVersion is the migration that creates the idempotency_keys table.
const idempotencyVersion = 8

func TestIdempotencyConformance(t *testing.T) {
	storetest.RunIdempotency(t, func(t *testing.T) idempotency.Store { return openMigrated(t, Config{}) },
		storetest.IdempotencyOptions{
			CountRecords: func(ctx context.Context, s idempotency.Store) (int, error) {
				var n int
				err := s.(*Store).reader.QueryRowContext(ctx, `SELECT count(*) FROM idempotency_keys`).Scan(&n)
				return n, err
			},
		})
}

// TestIdempotencyQueryPlans checks that the purge finds dead rows through the expiry index and
// that reservations and reads go through the primary key.
func TestIdempotencyQueryPlans(t *testing.T) {
	s := openMigrated(t, Config{})
	tests := []struct {
		name  string
		query string
		args  []any
		want  string
	}{
		{"purge", purgeIdemQuery, []any{formatTime(storetest.OutboxBase), idemPurgeBatch}, "USING COVERING INDEX idempotency_keys_expires"},
		{"read", readIdemQuery, []any{"ten_01", "usr_01", "k"}, "USING INDEX sqlite_autoindex_idempotency_keys_1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plan := queryPlan(t, s, tt.query, tt.args...)
			if !slices.ContainsFunc(plan, func(d string) bool { return strings.Contains(d, tt.want) }) {
				t.Errorf("plan %q does not contain %q", plan, tt.want)
			}
		})
	}
}

// TestIdempotencyMigrationDown reverts migrations down to and including the idempotency table's,
// leaving nothing of it, and back up.
func TestIdempotencyMigrationDown(t *testing.T) {
	s := openMigrated(t, Config{})
	ctx := t.Context()
	status, err := s.MigrationStatus(ctx)
	if err != nil {
		t.Fatalf("MigrationStatus: %v", err)
	}
	for i := len(status) - 1; i >= 0 && status[i].Version >= idempotencyVersion; i-- {
		if err := s.MigrateDown(ctx); err != nil {
			t.Fatalf("MigrateDown: %v", err)
		}
	}
	var leftovers int
	if err := s.reader.QueryRowContext(ctx,
		`SELECT count(*) FROM sqlite_schema WHERE tbl_name = 'idempotency_keys'`).Scan(&leftovers); err != nil {
		t.Fatalf("read schema: %v", err)
	}
	if leftovers != 0 {
		t.Errorf("%d schema objects of idempotency_keys left after its down migration", leftovers)
	}
	if err := s.MigrateUp(ctx); err != nil {
		t.Fatalf("MigrateUp: %v", err)
	}
	if n, err := s.PurgeIdempotencyKeys(ctx, storetest.OutboxBase); err != nil || n != 0 {
		t.Errorf("PurgeIdempotencyKeys on the recreated table = %d, %v", n, err)
	}
}
