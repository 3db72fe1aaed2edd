// The transactional outbox (events.OutboxStore), table outbox of migration 00007.
//
// AddToOutbox runs through s.q(ctx), so called with the context InTx hands out it inserts in the
// caller's transaction and the record commits or rolls back with the change it describes. The
// relay's methods join a transaction in ctx the same way, and otherwise take a pool connection.
//
// # Ordering under concurrent writers
//
// seq is an identity column: its value is drawn from a sequence when the row is inserted, not when
// its transaction commits, and sequences ignore rollbacks. So with several writers (several
// connections of one replica, or several replicas) rows become visible out of seq order. If T1
// inserts seq 10, T2 inserts seq 11 and T2 commits first, a reader between the two commits sees 11
// and not 10; once T1 commits, 10 is pending below records that may already be published. A relay
// that remembers the highest seq it published and next asks for "seq > 11" skips record 10
// forever. Hence the rules for the relay (issue «durable event bus»):
//
//   - Progress is published_at, never a position. Each round reads from the start of the pending
//     records with PendingOutbox (published_at IS NULL ORDER BY seq LIMIT n, no lower bound on
//     seq; the partial index outbox_pending keeps this as cheap as the backlog is small) and marks
//     what it published with MarkPublished. A record that commits late is returned by the next
//     round, even though records with higher seq were published before it.
//   - Gaps in seq are normal (rolled-back transactions, sequence caching): they never mean a lost
//     record, and nothing may wait for one to fill.
//   - Order within one subject still holds, because changes to one resource are serialised by its
//     row lock: a transaction changing a resource that another one changed waits until that one
//     commits, so its own record gets the higher seq, provided the domain adds the record after
//     the statement that writes (and so locks) the resource. A domain adding the record before
//     taking that lock would break this, and the relay could not repair it.
//   - Records of different subjects can be published in an order other than their seq; consumers
//     order by subject only.
//   - One relay publishes at a time (a lease or an advisory lock, see events.OutboxRelayStore), so
//     two replicas never publish two records of one subject concurrently.
//
// Batches: MarkPublished and RecordOutboxFailure take any number of ids and PurgePublishedOutbox
// any number of rows, but each statement handles at most outboxBatch of them, so that one call
// neither locks an unbounded set of rows at once nor, for a large purge outside a transaction,
// holds one long-running delete against the writers.

package postgres

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/events"
)

// outboxBatch bounds the ids or rows one outbox statement handles.
const outboxBatch = 500

// The relay's reads and the purge, which the partial indexes of migration 00007 serve: each
// condition implies its index's own (published_at < $1 implies published_at IS NOT NULL).
const (
	pendingOutboxQuery = `SELECT seq, id, tenant, type, subject, payload, created_at, attempts
		FROM outbox WHERE published_at IS NULL ORDER BY seq LIMIT $1`
	outboxBacklogQuery = `SELECT count(*), min(created_at) FROM outbox WHERE published_at IS NULL`
	purgeOutboxQuery   = `DELETE FROM outbox WHERE seq IN (
		SELECT seq FROM outbox WHERE published_at < $1 ORDER BY published_at LIMIT $2)`
)

var _ events.OutboxStore = (*Store)(nil)

// AddToOutbox inserts r with the next seq, unpublished and with no attempts. An invalid record is
// an errs.Invalid and an id already in the outbox an errs.Conflict.
func (s *Store) AddToOutbox(ctx context.Context, r events.OutboxRecord) error {
	if err := r.Validate(); err != nil {
		return fmt.Errorf("add event %s to outbox: %w", r.ID, err)
	}
	_, err := s.q(ctx).Exec(ctx,
		`INSERT INTO outbox (id, tenant, type, subject, payload, created_at) VALUES ($1, $2, $3, $4, $5, $6)`,
		r.ID, r.Tenant, string(r.Type), r.Subject, r.Payload, r.CreatedAt)
	if isUniqueViolation(err) {
		return errs.Wrap(errs.Conflict, err, "event %q is already in the outbox", r.ID)
	}
	if err != nil {
		return fmt.Errorf("add event %s to outbox: %w", r.ID, err)
	}
	return nil
}

// PendingOutbox returns up to limit unpublished records, lowest seq first: every committed
// unpublished record, whatever the seq of those published before it. limit < 1 is an
// errs.Invalid.
func (s *Store) PendingOutbox(ctx context.Context, limit int) ([]events.OutboxRecord, error) {
	if limit < 1 {
		return nil, errs.Field("limit", "must be at least 1")
	}
	rows, err := s.q(ctx).Query(ctx, pendingOutboxQuery, limit)
	if err != nil {
		return nil, fmt.Errorf("list pending outbox: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (events.OutboxRecord, error) {
		var (
			r   events.OutboxRecord
			typ string
		)
		// pgx copies bytea into a new slice, so the caller owns the payload.
		err := row.Scan(&r.Seq, &r.ID, &r.Tenant, &typ, &r.Subject, &r.Payload, &r.CreatedAt, &r.Attempts)
		r.Type, r.CreatedAt = events.Type(typ), r.CreatedAt.UTC()
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("list pending outbox: %w", err)
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// MarkPublished sets published_at to at on the unpublished records with these ids; published ones
// keep their first time and unknown ids are ignored.
func (s *Store) MarkPublished(ctx context.Context, ids []string, at time.Time) error {
	err := s.updateOutbox(ctx, `UPDATE outbox SET published_at = $2`, []any{at}, ids)
	if err != nil {
		return fmt.Errorf("mark %d outbox events published: %w", len(ids), err)
	}
	return nil
}

// RecordOutboxFailure adds one to the attempts of the unpublished records with these ids; an id
// listed twice counts once and unknown ids are ignored.
func (s *Store) RecordOutboxFailure(ctx context.Context, ids []string) error {
	if err := s.updateOutbox(ctx, `UPDATE outbox SET attempts = attempts + 1`, nil, ids); err != nil {
		return fmt.Errorf("record failure of %d outbox events: %w", len(ids), err)
	}
	return nil
}

// updateOutbox runs update (an UPDATE with its SET clause, whose parameters are args, numbered
// from $2) on the unpublished records with these ids, outboxBatch ids per statement as $1. The ids
// are deduplicated first so that no record is updated twice by one call, whichever batches its
// ids fall in.
func (s *Store) updateOutbox(ctx context.Context, update string, args []any, ids []string) error {
	ids = slices.Compact(slices.Sorted(slices.Values(ids)))
	query := update + ` WHERE published_at IS NULL AND id = ANY($1)`
	for batch := range slices.Chunk(ids, outboxBatch) {
		if _, err := s.q(ctx).Exec(ctx, query, append([]any{batch}, args...)...); err != nil {
			return err
		}
	}
	return nil
}

// OutboxBacklog counts the unpublished records and finds the oldest one's created_at.
func (s *Store) OutboxBacklog(ctx context.Context) (events.Backlog, error) {
	var (
		b      events.Backlog
		oldest *time.Time
	)
	err := s.q(ctx).QueryRow(ctx, outboxBacklogQuery).Scan(&b.Pending, &oldest)
	if err != nil {
		return events.Backlog{}, fmt.Errorf("outbox backlog: %w", err)
	}
	if oldest != nil {
		b.Oldest = oldest.UTC()
	}
	return b, nil
}

// PurgePublishedOutbox deletes the records published before before, outboxBatch per statement,
// and returns how many it deleted. Unpublished records are never deleted. With an error, the count
// is of the rows the statements before it deleted, which outside a transaction stay deleted.
func (s *Store) PurgePublishedOutbox(ctx context.Context, before time.Time) (int64, error) {
	var total int64
	for {
		// Oldest first, so that a purge cut short leaves the most recent records.
		tag, err := s.q(ctx).Exec(ctx, purgeOutboxQuery, before, outboxBatch)
		if err != nil {
			return total, fmt.Errorf("purge published outbox: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < outboxBatch {
			return total, nil
		}
	}
}
