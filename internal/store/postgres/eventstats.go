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
// its last event time to at when later: AddEventStats of one event.
func (s *Store) IncrementEventStats(ctx context.Context, tenant, typ string, at time.Time) error {
	err := s.AddEventStats(ctx, []consumers.EventStatAdd{{Tenant: tenant, Type: typ, Count: 1, LastEventAt: at}})
	if err != nil {
		return fmt.Errorf("count event %s of %s: %w", typ, tenant, err)
	}
	return nil
}

// AddEventStats adds each add's count to its (tenant, type) row, creating it, and raises its last
// event time when later, with one upsert of the unnested arrays. The rows are distinct and
// sorted (NormalizeEventStatAdds): ON CONFLICT DO UPDATE may touch a row once per statement, and
// concurrent transactions update rows in one order.
func (s *Store) AddEventStats(ctx context.Context, adds []consumers.EventStatAdd) error {
	adds, err := consumers.NormalizeEventStatAdds(adds)
	if err != nil {
		return fmt.Errorf("count events: %w", err)
	}
	if len(adds) == 0 {
		return nil
	}
	tenants, types := make([]string, len(adds)), make([]string, len(adds))
	counts, lasts := make([]int64, len(adds)), make([]time.Time, len(adds))
	for i, a := range adds {
		tenants[i], types[i], counts[i], lasts[i] = a.Tenant, a.Type, a.Count, a.LastEventAt
	}
	_, err = s.q(ctx).Exec(ctx,
		`INSERT INTO event_stats (tenant, type, count, last_event_at)
		 SELECT tenant, type, count, last_event_at
		 FROM unnest($1::text[], $2::text[], $3::bigint[], $4::timestamptz[]) WITH ORDINALITY
		      AS t(tenant, type, count, last_event_at, n) ORDER BY n
		 ON CONFLICT (tenant, type) DO UPDATE SET count = event_stats.count + excluded.count,
		 last_event_at = greatest(event_stats.last_event_at, excluded.last_event_at)`,
		tenants, types, counts, lasts)
	if err != nil {
		return fmt.Errorf("count events of %d tenant types: %w", len(adds), err)
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
