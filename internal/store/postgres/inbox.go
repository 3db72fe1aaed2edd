// The consumers' inbox (consumers.InboxStore), table inbox of migration 00009.
//
// ClaimInbox and ClaimInboxBatch run through s.q(ctx), so with the context InTx hands out it claims in the caller's
// transaction, which consumers.Once also uses for the effect. INSERT … ON CONFLICT DO NOTHING on
// the primary key makes concurrent claims of one pair safe: a second transaction waits on the
// first one's uncommitted row, then does nothing if it committed, or inserts if it rolled back.

package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nops-kernel/nops/internal/consumers"
)

var _ consumers.InboxStore = (*Store)(nil)

// inboxBatch bounds the rows one purge statement deletes.
const inboxBatch = 500

// purgeInboxQuery deletes the oldest claims before a cutoff, served by index inbox_applied.
const purgeInboxQuery = `DELETE FROM inbox WHERE (consumer, event_id) IN (
	SELECT consumer, event_id FROM inbox WHERE applied_at < $1 ORDER BY applied_at LIMIT $2)`

// ClaimInbox records that consumer applies eventID at at; false when the pair was already
// claimed.
func (s *Store) ClaimInbox(ctx context.Context, consumer, eventID string, at time.Time) (bool, error) {
	if err := consumers.CheckClaim(consumer, eventID); err != nil {
		return false, fmt.Errorf("claim event %s for %s: %w", eventID, consumer, err)
	}
	tag, err := s.q(ctx).Exec(ctx,
		`INSERT INTO inbox (consumer, event_id, applied_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
		consumer, eventID, at)
	if err != nil {
		return false, fmt.Errorf("claim event %s for %s: %w", eventID, consumer, err)
	}
	return tag.RowsAffected() == 1, nil
}

// ClaimInboxBatch claims eventIDs for consumer at at with one INSERT … SELECT unnest(ids) ON
// CONFLICT DO NOTHING RETURNING event_id and returns the ids claimed now. Rows are inserted in
// the order of eventIDs: callers that pass them sorted (consumers.GroupBatcher does) lock them
// in one order, so two such transactions cannot deadlock on their claims. A duplicate id
// conflicts with the row the same statement inserted and is skipped.
func (s *Store) ClaimInboxBatch(ctx context.Context, consumer string, eventIDs []string, at time.Time) ([]string, error) {
	if len(eventIDs) == 0 {
		return nil, nil
	}
	for _, id := range eventIDs {
		if err := consumers.CheckClaim(consumer, id); err != nil {
			return nil, fmt.Errorf("claim %d events for %s: %w", len(eventIDs), consumer, err)
		}
	}
	rows, err := s.q(ctx).Query(ctx,
		`INSERT INTO inbox (consumer, event_id, applied_at)
		 SELECT $1, id, $3 FROM unnest($2::text[]) WITH ORDINALITY AS t(id, n) ORDER BY n
		 ON CONFLICT DO NOTHING RETURNING event_id`,
		consumer, eventIDs, at)
	if err != nil {
		return nil, fmt.Errorf("claim %d events for %s: %w", len(eventIDs), consumer, err)
	}
	claimed, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("claim %d events for %s: %w", len(eventIDs), consumer, err)
	}
	return claimed, nil
}

// PurgeInbox deletes the claims made before before, oldest first and inboxBatch per statement,
// and returns how many it deleted. With an error, the count is of the rows the statements before
// it deleted, which outside a transaction stay deleted.
func (s *Store) PurgeInbox(ctx context.Context, before time.Time) (int64, error) {
	var total int64
	for {
		tag, err := s.q(ctx).Exec(ctx, purgeInboxQuery, before, inboxBatch)
		if err != nil {
			return total, fmt.Errorf("purge inbox: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < inboxBatch {
			return total, nil
		}
	}
}
