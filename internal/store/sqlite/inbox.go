// The consumers' inbox (consumers.InboxStore), table inbox of migration 00009.
//
// ClaimInbox writes through s.w(ctx), so with the context InTx hands out it claims in the
// caller's transaction, which consumers.Once also uses for the effect. Transactions run one at a
// time on the writer connection (and take the write lock at BEGIN), so a claim never waits on
// another open one: it sees every earlier claim committed.

package sqlite

import (
	"context"
	"fmt"
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
