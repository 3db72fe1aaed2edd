// The transactional outbox (events.OutboxStore), table outbox of migration 00007.
//
// AddToOutbox writes through s.w(ctx), so called with the context InTx hands out it inserts in the
// caller's transaction and the record commits or rolls back with the change it describes. The
// relay's methods join a transaction in ctx the same way, and otherwise read from the reader pool
// and write on the writer connection like every other method.
//
// Ordering: every write, and so every transaction, runs on the one writer connection, so on SQLite
// seq order is commit order and a reader never sees a record with a lower seq appear after one
// with a higher seq. The relay must not rely on that: on PostgreSQL it does not hold (see
// internal/store/postgres/outbox.go), so the relay reads all pending records with PendingOutbox,
// never "seq greater than the last one published".
//
// Batches: MarkPublished and RecordOutboxFailure take any number of ids and PurgePublishedOutbox
// any number of rows, but each statement handles at most outboxBatch of them, so that one call
// never builds a statement beyond SQLite's variable limit nor, outside a transaction, holds the
// single writer connection (and every other writer behind it) for a whole large purge.

package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/events"
)

// outboxBatch bounds the ids or rows one outbox statement handles.
const outboxBatch = 500

// The relay's reads and the purge, which the partial indexes of migration 00007 serve: each
// condition implies its index's own (published_at < ? implies published_at IS NOT NULL).
const (
	pendingOutboxQuery = `SELECT seq, id, tenant, type, subject, payload, created_at, attempts
		FROM outbox WHERE published_at IS NULL ORDER BY seq LIMIT ?`
	outboxBacklogQuery = `SELECT count(*), min(created_at) FROM outbox WHERE published_at IS NULL`
	purgeOutboxQuery   = `DELETE FROM outbox WHERE seq IN (
		SELECT seq FROM outbox WHERE published_at < ? ORDER BY published_at LIMIT ?)`
)

var _ events.OutboxStore = (*Store)(nil)

// AddToOutbox inserts r with the next seq, unpublished and with no attempts. An invalid record is
// an errs.Invalid and an id already in the outbox an errs.Conflict.
func (s *Store) AddToOutbox(ctx context.Context, r events.OutboxRecord) error {
	if err := r.Validate(); err != nil {
		return fmt.Errorf("add event %s to outbox: %w", r.ID, err)
	}
	_, err := s.w(ctx).ExecContext(ctx,
		`INSERT INTO outbox (id, tenant, type, subject, payload, created_at) VALUES (?, ?, ?, ?, ?, ?)`,
		r.ID, r.Tenant, string(r.Type), r.Subject, r.Payload, formatTime(r.CreatedAt))
	if isUniqueViolation(err) {
		return errs.Wrap(errs.Conflict, err, "event %q is already in the outbox", r.ID)
	}
	if err != nil {
		return fmt.Errorf("add event %s to outbox: %w", r.ID, err)
	}
	return nil
}

// PendingOutbox returns up to limit unpublished records, lowest seq first. limit < 1 is an
// errs.Invalid.
func (s *Store) PendingOutbox(ctx context.Context, limit int) ([]events.OutboxRecord, error) {
	if limit < 1 {
		return nil, errs.Field("limit", "must be at least 1")
	}
	rows, err := s.r(ctx).QueryContext(ctx, pendingOutboxQuery, limit)
	if err != nil {
		return nil, fmt.Errorf("list pending outbox: %w", err)
	}
	defer rows.Close()
	// No capacity from limit: the relay may pass a large limit to an almost empty outbox.
	var out []events.OutboxRecord
	for rows.Next() {
		var (
			r         events.OutboxRecord
			typ       string
			createdAt string
		)
		// Scanning into *[]byte copies the bytes, so the caller owns the payload.
		if err := rows.Scan(&r.Seq, &r.ID, &r.Tenant, &typ, &r.Subject, &r.Payload, &createdAt, &r.Attempts); err != nil {
			return nil, fmt.Errorf("list pending outbox: %w", err)
		}
		r.Type = events.Type(typ)
		if r.CreatedAt, err = parseTime(createdAt); err != nil {
			return nil, fmt.Errorf("list pending outbox: event %s created_at: %w", r.ID, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list pending outbox: %w", err)
	}
	return out, nil
}

// MarkPublished sets published_at to at on the unpublished records with these ids; published ones
// keep their first time and unknown ids are ignored.
func (s *Store) MarkPublished(ctx context.Context, ids []string, at time.Time) error {
	err := s.updateOutbox(ctx, `UPDATE outbox SET published_at = ?`, []any{formatTime(at)}, ids)
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

// updateOutbox runs update (an UPDATE with its SET clause, whose parameters are args) on the
// unpublished records with these ids, outboxBatch ids per statement. The ids are deduplicated
// first so that no record is updated twice by one call, whichever batches its ids fall in.
func (s *Store) updateOutbox(ctx context.Context, update string, args []any, ids []string) error {
	ids = slices.Compact(slices.Sorted(slices.Values(ids)))
	for batch := range slices.Chunk(ids, outboxBatch) {
		query := update + ` WHERE published_at IS NULL AND id IN (?` + strings.Repeat(", ?", len(batch)-1) + `)`
		params := slices.Grow(slices.Clone(args), len(batch))
		for _, id := range batch {
			params = append(params, id)
		}
		if _, err := s.w(ctx).ExecContext(ctx, query, params...); err != nil {
			return err
		}
	}
	return nil
}

// OutboxBacklog counts the unpublished records and finds the oldest one's created_at.
func (s *Store) OutboxBacklog(ctx context.Context) (events.Backlog, error) {
	var (
		b      events.Backlog
		oldest sql.NullString
	)
	err := s.r(ctx).QueryRowContext(ctx, outboxBacklogQuery).Scan(&b.Pending, &oldest)
	if err != nil {
		return events.Backlog{}, fmt.Errorf("outbox backlog: %w", err)
	}
	// The fixed-width text makes min() the earliest time.
	if oldest.Valid {
		if b.Oldest, err = parseTime(oldest.String); err != nil {
			return events.Backlog{}, fmt.Errorf("outbox backlog: oldest created_at: %w", err)
		}
	}
	return b, nil
}

// PurgePublishedOutbox deletes the records published before before, outboxBatch per statement,
// and returns how many it deleted. Unpublished records are never deleted. With an error, the count
// is of the rows the statements before it deleted, which outside a transaction stay deleted.
func (s *Store) PurgePublishedOutbox(ctx context.Context, before time.Time) (int64, error) {
	cutoff := formatTime(before)
	var total int64
	for {
		// Oldest first, so that a purge cut short leaves the most recent records.
		res, err := s.w(ctx).ExecContext(ctx, purgeOutboxQuery, cutoff, outboxBatch)
		if err != nil {
			return total, fmt.Errorf("purge published outbox: %w", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return total, fmt.Errorf("purge published outbox: %w", err)
		}
		total += n
		if n < outboxBatch {
			return total, nil
		}
	}
}
