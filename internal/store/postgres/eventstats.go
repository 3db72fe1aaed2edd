// The event-stats projection (consumers.EventStatsStore's own methods), table event_stats of
// migration 00009.

package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nops-kernel/nops/internal/consumers"
)

var _ consumers.Store = (*Store)(nil)

// IncrementEventStats adds one to the count of (tenant, typ), creating the row at 1, and raises
// its last event time to at when later.
func (s *Store) IncrementEventStats(ctx context.Context, tenant, typ string, at time.Time) error {
	if err := consumers.CheckEventStat(tenant, typ, at); err != nil {
		return fmt.Errorf("count event %s of %s: %w", typ, tenant, err)
	}
	_, err := s.q(ctx).Exec(ctx,
		`INSERT INTO event_stats (tenant, type, count, last_event_at) VALUES ($1, $2, 1, $3)
		 ON CONFLICT (tenant, type) DO UPDATE SET count = event_stats.count + 1,
		 last_event_at = greatest(event_stats.last_event_at, excluded.last_event_at)`,
		tenant, typ, at)
	if err != nil {
		return fmt.Errorf("count event %s of %s: %w", typ, tenant, err)
	}
	return nil
}

// EventStats returns the rows of tenant ("" every tenant), sorted by tenant then type in byte
// order (COLLATE "C"), as the SQLite adapter does.
func (s *Store) EventStats(ctx context.Context, tenant string) ([]consumers.EventStat, error) {
	query, args := `SELECT tenant, type, count, last_event_at FROM event_stats
		ORDER BY tenant COLLATE "C", type COLLATE "C"`, []any(nil)
	if tenant != "" {
		query, args = `SELECT tenant, type, count, last_event_at FROM event_stats WHERE tenant = $1
			ORDER BY type COLLATE "C"`, []any{tenant}
	}
	rows, err := s.q(ctx).Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list event stats: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (consumers.EventStat, error) {
		var st consumers.EventStat
		err := row.Scan(&st.Tenant, &st.Type, &st.Count, &st.LastEventAt)
		st.LastEventAt = st.LastEventAt.UTC()
		return st, err
	})
	if err != nil {
		return nil, fmt.Errorf("list event stats: %w", err)
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}
