package postgres

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// queryPlan returns PostgreSQL's EXPLAIN of query as one text, with sequential scans disabled so
// that a usable index shows even on a small table.
func queryPlan(t *testing.T, s *Store, query string, args ...any) string {
	t.Helper()
	var plan []string
	err := s.InTx(t.Context(), func(ctx context.Context) error {
		if _, err := s.q(ctx).Exec(ctx, `SET LOCAL enable_seqscan = off`); err != nil {
			return err
		}
		rows, err := s.q(ctx).Query(ctx, "EXPLAIN "+query, args...)
		if err != nil {
			return err
		}
		plan, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	if err != nil {
		t.Fatalf("EXPLAIN: %v", err)
	}
	return strings.Join(plan, "\n")
}
