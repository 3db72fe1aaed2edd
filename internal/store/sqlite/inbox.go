// The consumers' inbox (consumers.InboxStore), table inbox of migration 00009.
//
// ClaimInbox and ClaimInboxBatch write through s.w(ctx), so with the context InTx hands out it claims in the
// caller's transaction, which consumers.Once also uses for the effect. Transactions run one at a
// time on the writer connection (and take the write lock at BEGIN), so a claim never waits on
// another open one: it sees every earlier claim committed.

package sqlite

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nops-kernel/nops/internal/consumers"
)

var _ consumers.InboxStore = (*Store)(nil)

// inboxBatch bounds the rows one purge statement deletes.
const inboxBatch = 500

// purgeInboxQuery deletes the oldest claims before a cutoff, served by index inbox_applied.
const purgeInboxQuery = `DELETE FROM inbox WHERE (consumer, event_id) IN (
	SELECT consumer, event_id FROM inbox WHERE applied_at < ? ORDER BY applied_at LIMIT ?)`

// ClaimInbox records that consumer applies eventID at at; false when the pair was already
// claimed.
func (s *Store) ClaimInbox(ctx context.Context, consumer, eventID string, at time.Time) (bool, error) {
	if err := consumers.CheckClaim(consumer, eventID); err != nil {
		return false, fmt.Errorf("claim event %s for %s: %w", eventID, consumer, err)
	}
	res, err := s.w(ctx).ExecContext(ctx,
		`INSERT INTO inbox (consumer, event_id, applied_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`,
		consumer, eventID, formatTime(at))
	if err != nil {
		return false, fmt.Errorf("claim event %s for %s: %w", eventID, consumer, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("claim event %s for %s: %w", eventID, consumer, err)
	}
	return n == 1, nil
}

// ClaimInboxBatch claims eventIDs for consumer at at with one INSERT … ON CONFLICT DO NOTHING
// RETURNING event_id (SQLite ≥ 3.35) and returns the ids claimed now.
func (s *Store) ClaimInboxBatch(ctx context.Context, consumer string, eventIDs []string, at time.Time) ([]string, error) {
	if len(eventIDs) == 0 {
		return nil, nil
	}
	for _, id := range eventIDs {
		if err := consumers.CheckClaim(consumer, id); err != nil {
			return nil, fmt.Errorf("claim %d events for %s: %w", len(eventIDs), consumer, err)
		}
	}
	var q strings.Builder
	q.WriteString(`INSERT INTO inbox (consumer, event_id, applied_at) VALUES `)
	args := make([]any, 0, 2+len(eventIDs))
	args = append(args, consumer, formatTime(at))
	for i, id := range eventIDs {
		if i > 0 {
			q.WriteByte(',')
		}
		q.WriteString(`(?1, ?`) // numbered: an anonymous ? would take ?2's number after ?1
		q.WriteString(strconv.Itoa(i + 3))
		q.WriteString(`, ?2)`)
		args = append(args, id)
	}
	q.WriteString(` ON CONFLICT DO NOTHING RETURNING event_id`)
	rows, err := s.w(ctx).QueryContext(ctx, q.String(), args...)
	if err != nil {
		return nil, fmt.Errorf("claim %d events for %s: %w", len(eventIDs), consumer, err)
	}
	defer rows.Close()
	claimed := make([]string, 0, len(eventIDs))
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("claim %d events for %s: %w", len(eventIDs), consumer, err)
		}
		claimed = append(claimed, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("claim %d events for %s: %w", len(eventIDs), consumer, err)
	}
	return claimed, nil
}

// PurgeInbox deletes the claims made before before, oldest first and inboxBatch per statement,
// and returns how many it deleted. With an error, the count is of the rows the statements before
// it deleted, which outside a transaction stay deleted.
func (s *Store) PurgeInbox(ctx context.Context, before time.Time) (int64, error) {
	cutoff := formatTime(before)
	var total int64
	for {
		res, err := s.w(ctx).ExecContext(ctx, purgeInboxQuery, cutoff, inboxBatch)
		if err != nil {
			return total, fmt.Errorf("purge inbox: %w", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return total, fmt.Errorf("purge inbox: %w", err)
		}
		total += n
		if n < inboxBatch {
			return total, nil
		}
	}
}
