// The event-stats projection (consumers.EventStatsStore's own methods), table event_stats of
// migration 00009.

package sqlite

import (
	"context"
	"fmt"
	"time"

	"github.com/nops-kernel/nops/internal/consumers"
)

var _ consumers.Store = (*Store)(nil)

// IncrementEventStats adds one to the count of (tenant, typ), creating the row at 1, and raises
// its last event time to at when later. Fixed-width UTC text makes max() the later time.
func (s *Store) IncrementEventStats(ctx context.Context, tenant, typ string, at time.Time) error {
	if err := consumers.CheckEventStat(tenant, typ, at); err != nil {
		return fmt.Errorf("count event %s of %s: %w", typ, tenant, err)
	}
	_, err := s.w(ctx).ExecContext(ctx,
		`INSERT INTO event_stats (tenant, type, count, last_event_at) VALUES (?, ?, 1, ?)
		 ON CONFLICT (tenant, type) DO UPDATE SET count = count + 1,
		 last_event_at = max(last_event_at, excluded.last_event_at)`,
		tenant, typ, formatTime(at))
	if err != nil {
		return fmt.Errorf("count event %s of %s: %w", typ, tenant, err)
	}
	return nil
}

// EventStats returns the rows of tenant ("" every tenant), sorted by tenant then type.
func (s *Store) EventStats(ctx context.Context, tenant string) ([]consumers.EventStat, error) {
	query, args := `SELECT tenant, type, count, last_event_at FROM event_stats ORDER BY tenant, type`, []any(nil)
	if tenant != "" {
		query, args = `SELECT tenant, type, count, last_event_at FROM event_stats WHERE tenant = ? ORDER BY type`, []any{tenant}
	}
	rows, err := s.r(ctx).QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list event stats: %w", err)
	}
	defer rows.Close()
	var out []consumers.EventStat
	for rows.Next() {
		var (
			st   consumers.EventStat
			last string
		)
		if err := rows.Scan(&st.Tenant, &st.Type, &st.Count, &last); err != nil {
			return nil, fmt.Errorf("list event stats: %w", err)
		}
		if st.LastEventAt, err = parseTime(last); err != nil {
			return nil, fmt.Errorf("list event stats: %s/%s last_event_at: %w", st.Tenant, st.Type, err)
		}
		out = append(out, st)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list event stats: %w", err)
	}
	return out, nil
}
