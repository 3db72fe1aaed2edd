package postgres

import (
	"context"
	"strings"
	"testing"

	"github.com/nops-kernel/nops/internal/idempotency"
	"github.com/nops-kernel/nops/internal/store/storetest"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

// idempotencyVersion is the migration that creates the idempotency_keys table.
const idempotencyVersion = 8

// openIdempotency opens a migrated store on a fresh database, with enough connections for
// concurrent reservations to really run side by side.
func openIdempotency(t *testing.T) *Store {
	t.Helper()
	s := openTest(t, Config{URL: services.Postgres(t), MaxConns: 8})
	if err := s.MigrateUp(t.Context()); err != nil {
		t.Fatalf("MigrateUp: %v", err)
	}
	return s
}

func TestIdempotencyConformance(t *testing.T) {
	storetest.RunIdempotency(t, func(t *testing.T) idempotency.Store { return openIdempotency(t) },
		storetest.IdempotencyOptions{
			CountRecords: func(ctx context.Context, s idempotency.Store) (int, error) {
				var n int
				err := s.(*Store).pool.QueryRow(ctx, `SELECT count(*) FROM idempotency_keys`).Scan(&n)
				return n, err
			},
		})
}

// TestIdempotencyQueryPlans checks that the purge can find dead rows through the expiry index and
// reads go through the primary key (with sequential scans disabled, the planner picks an index
// only if the query can use it).
func TestIdempotencyQueryPlans(t *testing.T) {
	s := openIdempotency(t)
	tests := []struct {
		name  string
		query string
		args  []any
		want  string
	}{
		{"purge", purgeIdemQuery, []any{storetest.OutboxBase, idemPurgeBatch}, "idempotency_keys_expires"},
		{"read", readIdemQuery, []any{"ten_01", "usr_01", "k"}, "idempotency_keys_pkey"},
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

// TestIdempotencyMigrationDown reverts migrations down to and including the idempotency table's,
// leaving nothing of it, and back up.
func TestIdempotencyMigrationDown(t *testing.T) {
	s := openIdempotency(t)
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
	if err := s.pool.QueryRow(ctx,
		`SELECT count(*) FROM pg_class WHERE relname IN ('idempotency_keys', 'idempotency_keys_pkey', 'idempotency_keys_expires')`).Scan(&leftovers); err != nil {
		t.Fatalf("read catalog: %v", err)
	}
	if leftovers != 0 {
		t.Errorf("%d relations of idempotency_keys left after its down migration", leftovers)
	}
	if err := s.MigrateUp(ctx); err != nil {
		t.Fatalf("MigrateUp: %v", err)
	}
	if n, err := s.PurgeIdempotencyKeys(ctx, storetest.OutboxBase); err != nil || n != 0 {
		t.Errorf("PurgeIdempotencyKeys on the recreated table = %d, %v", n, err)
	}
}
