// The event-stats projection (consumers.EventStatsStore's own methods), table event_stats of
// migration 00009.

package sqlite

import (
	"context"
	"fmt"
	"strings"
	"time"

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
// event time when later, with one multi-row upsert. Fixed-width UTC text makes max() the later
// time.
func (s *Store) AddEventStats(ctx context.Context, adds []consumers.EventStatAdd) error {
	adds, err := consumers.NormalizeEventStatAdds(adds)
	if err != nil {
		return fmt.Errorf("count events: %w", err)
	}
	if len(adds) == 0 {
		return nil
	}
	var q strings.Builder
	q.WriteString(`INSERT INTO event_stats (tenant, type, count, last_event_at) VALUES `)
	args := make([]any, 0, 4*len(adds))
	for i, a := range adds {
		if i > 0 {
			q.WriteByte(',')
		}
		q.WriteString(`(?, ?, ?, ?)`)
		args = append(args, a.Tenant, a.Type, a.Count, formatTime(a.LastEventAt))
	}
	q.WriteString(` ON CONFLICT (tenant, type) DO UPDATE SET count = count + excluded.count,
		last_event_at = max(last_event_at, excluded.last_event_at)`)
	if _, err := s.w(ctx).ExecContext(ctx, q.String(), args...); err != nil {
		return fmt.Errorf("count events of %d tenant types: %w", len(adds), err)
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
