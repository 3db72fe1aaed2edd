package sqlite

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/reqsig"
	"github.com/nops-kernel/nops/internal/store/storetest"
)

// requestKeysVersion is the migration that creates request_keys and request_nonces.
const requestKeysVersion = 11

func TestRequestKeys(t *testing.T) {
	storetest.RunRequestKeys(t, func(t *testing.T) storetest.RequestKeyStore { return openMigrated(t, Config{}) })
}

func TestNonces(t *testing.T) {
	storetest.RunNonces(t, func(t *testing.T) reqsig.NonceStore { return openMigrated(t, Config{}) },
		storetest.NonceOptions{
			CountRecords: func(ctx context.Context, s reqsig.NonceStore) (int, error) {
				var n int
				err := s.(*Store).reader.QueryRowContext(ctx, `SELECT count(*) FROM request_nonces`).Scan(&n)
				return n, err
			},
		})
}

// TestRequestKeysQueryPlans checks that the purge finds dead nonces through the expiry index,
// claims conflict on the primary key and listings page through the tenant index.
func TestRequestKeysQueryPlans(t *testing.T) {
	s := openMigrated(t, Config{})
	now := formatTime(time.Now())
	tests := []struct {
		name  string
		query string
		args  []any
		want  string
	}{
		{"purge", purgeNoncesQuery, []any{now, noncePurgeBatch, now}, "USING COVERING INDEX request_nonces_expires"},
		{"list", `SELECT ` + requestKeyColumns + ` FROM request_keys WHERE tenant_id = ? AND id > ? ORDER BY id LIMIT ?`,
			[]any{"ten_a", "", 10}, "USING INDEX request_keys_tenant"},
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

// TestRequestKeysMigrationDown reverts migrations down to and including 00011, leaving nothing
// of its tables, and back up.
func TestRequestKeysMigrationDown(t *testing.T) {
	s := openMigrated(t, Config{})
	ctx := t.Context()
	status, err := s.MigrationStatus(ctx)
	if err != nil {
		t.Fatalf("MigrationStatus: %v", err)
	}
	for i := len(status) - 1; i >= 0 && status[i].Version >= requestKeysVersion; i-- {
		if err := s.MigrateDown(ctx); err != nil {
			t.Fatalf("MigrateDown: %v", err)
		}
	}
	var leftovers int
	if err := s.reader.QueryRowContext(ctx,
		`SELECT count(*) FROM sqlite_schema WHERE tbl_name IN ('request_keys', 'request_nonces')`).Scan(&leftovers); err != nil {
		t.Fatalf("read schema: %v", err)
	}
	if leftovers != 0 {
		t.Errorf("%d schema objects of request_keys and request_nonces left after their down migration", leftovers)
	}
	if err := s.MigrateUp(ctx); err != nil {
		t.Fatalf("MigrateUp: %v", err)
	}
	if n, err := s.PurgeNonces(ctx, time.Now()); err != nil || n != 0 {
		t.Errorf("PurgeNonces on the recreated table = %d, %v", n, err)
	}
}
