// The API's Idempotency-Key records (idempotency.Store), table idempotency_keys of migration 00008.
//
// ReserveIdempotencyKey is one upsert: INSERT … ON CONFLICT DO UPDATE … WHERE the existing row is
// dead, so a live row is never touched and a dead one is replaced in the same statement. It runs
// with the read of the row it lost to in one transaction on the writer connection, so the row it
// returns is the one that made it fail (no release or purge can slip in between).

package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/idempotency"
)

// idemPurgeBatch bounds the rows one purge statement deletes, so that a large purge never holds
// the single writer connection (and every writer behind it) for long.
const idemPurgeBatch = 500

const (
	// reserveIdemQuery inserts a reservation, or replaces a row dead at now (the last two
	// parameters): expired, or in flight past its lock with the same fingerprint.
	reserveIdemQuery = `INSERT INTO idempotency_keys
		(tenant, principal, idem_key, fingerprint, token, state, created_at, locked_until, expires_at)
		VALUES (?, ?, ?, ?, ?, 'in_flight', ?, ?, ?)
		ON CONFLICT (tenant, principal, idem_key) DO UPDATE SET
			fingerprint = excluded.fingerprint, token = excluded.token, state = 'in_flight',
			created_at = excluded.created_at, locked_until = excluded.locked_until,
			expires_at = excluded.expires_at, status = NULL, header = NULL, body = NULL
		WHERE idempotency_keys.expires_at <= ?
		   OR (idempotency_keys.state = 'in_flight' AND idempotency_keys.locked_until <= ?
		       AND idempotency_keys.fingerprint = excluded.fingerprint)`
	readIdemQuery = `SELECT fingerprint, token, state, created_at, locked_until, expires_at, status, header, body
		FROM idempotency_keys WHERE tenant = ? AND principal = ? AND idem_key = ?`
	purgeIdemQuery = `DELETE FROM idempotency_keys WHERE rowid IN (
		SELECT rowid FROM idempotency_keys WHERE expires_at <= ? LIMIT ?)`
)

var _ idempotency.Store = (*Store)(nil)

// ReserveIdempotencyKey stores r unless a live record of its scope and key exists, which it then
// returns (see idempotency.Store).
func (s *Store) ReserveIdempotencyKey(ctx context.Context, r idempotency.Record, now time.Time) (idempotency.Record, bool, error) {
	if err := r.ValidateReservation(); err != nil {
		return idempotency.Record{}, false, fmt.Errorf("reserve idempotency key: %w", err)
	}
	var (
		out      idempotency.Record
		reserved bool
	)
	err := s.InTx(ctx, func(ctx context.Context) error {
		res, err := s.w(ctx).ExecContext(ctx, reserveIdemQuery,
			r.Scope.Tenant, r.Scope.Principal, r.Key, r.Fingerprint[:], r.Token,
			formatTime(r.CreatedAt), formatTime(r.LockedUntil), formatTime(r.ExpiresAt), formatTime(now), formatTime(now))
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n == 1 {
			reserved = true
			out = r
			out.CreatedAt, out.LockedUntil, out.ExpiresAt = roundTime(r.CreatedAt), roundTime(r.LockedUntil), roundTime(r.ExpiresAt)
			return nil
		}
		out, err = s.readIdem(ctx, r.Scope, r.Key)
		return err
	})
	if err != nil {
		return idempotency.Record{}, false, fmt.Errorf("reserve idempotency key: %w", err)
	}
	return out, reserved, nil
}

// readIdem reads the record of scope and key (on the transaction in ctx).
func (s *Store) readIdem(ctx context.Context, scope idempotency.Scope, key string) (idempotency.Record, error) {
	var (
		r                               = idempotency.Record{Scope: scope, Key: key}
		fp, body                        []byte
		state, created, locked, expires string
		status                          sql.NullInt64
		header                          sql.NullString
	)
	err := s.r(ctx).QueryRowContext(ctx, readIdemQuery, scope.Tenant, scope.Principal, key).
		Scan(&fp, &r.Token, &state, &created, &locked, &expires, &status, &header, &body)
	if errors.Is(err, sql.ErrNoRows) {
		return idempotency.Record{}, errors.New("the record that refused the reservation is gone")
	}
	if err != nil {
		return idempotency.Record{}, err
	}
	if len(fp) != len(r.Fingerprint) {
		return idempotency.Record{}, fmt.Errorf("fingerprint of %d bytes", len(fp))
	}
	copy(r.Fingerprint[:], fp)
	r.State = idempotency.State(state)
	for _, f := range []struct {
		dst *time.Time
		src string
	}{{&r.CreatedAt, created}, {&r.LockedUntil, locked}, {&r.ExpiresAt, expires}} {
		if *f.dst, err = parseTime(f.src); err != nil {
			return idempotency.Record{}, fmt.Errorf("record time: %w", err)
		}
	}
	if r.State == idempotency.Completed {
		resp := idempotency.Response{Status: int(status.Int64)}
		if header.Valid {
			if err := json.Unmarshal([]byte(header.String), &resp.Header); err != nil {
				return idempotency.Record{}, fmt.Errorf("decode stored headers: %w", err)
			}
		}
		if len(resp.Header) == 0 {
			resp.Header = nil
		}
		if len(body) > 0 {
			resp.Body = body
		}
		r.Response = &resp
	}
	return r, nil
}

// CompleteIdempotencyKey stores resp on the in-flight record token holds; with none, an
// errs.Conflict.
func (s *Store) CompleteIdempotencyKey(ctx context.Context, scope idempotency.Scope, key, token string, resp idempotency.Response, expiresAt time.Time) error {
	if err := errors.Join(resp.Validate(), idempotency.ValidateToken(token)); err != nil {
		return fmt.Errorf("complete idempotency key: %w", err)
	}
	header, err := encodeHeader(resp.Header)
	if err != nil {
		return fmt.Errorf("complete idempotency key: %w", err)
	}
	res, err := s.w(ctx).ExecContext(ctx,
		`UPDATE idempotency_keys SET state = 'completed', status = ?, header = ?, body = ?, expires_at = ?
		 WHERE tenant = ? AND principal = ? AND idem_key = ? AND token = ? AND state = 'in_flight'`,
		resp.Status, header, resp.Body, formatTime(expiresAt), scope.Tenant, scope.Principal, key, token)
	if err != nil {
		return fmt.Errorf("complete idempotency key: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("complete idempotency key: %w", err)
	}
	if n == 0 {
		return errs.New(errs.Conflict, "the idempotency key is no longer held by this request")
	}
	return nil
}

// ReleaseIdempotencyKey deletes the in-flight record token holds, if any.
func (s *Store) ReleaseIdempotencyKey(ctx context.Context, scope idempotency.Scope, key, token string) error {
	if err := idempotency.ValidateToken(token); err != nil {
		return fmt.Errorf("release idempotency key: %w", err)
	}
	_, err := s.w(ctx).ExecContext(ctx,
		`DELETE FROM idempotency_keys WHERE tenant = ? AND principal = ? AND idem_key = ? AND token = ? AND state = 'in_flight'`,
		scope.Tenant, scope.Principal, key, token)
	if err != nil {
		return fmt.Errorf("release idempotency key: %w", err)
	}
	return nil
}

// PurgeIdempotencyKeys deletes the records with expires_at <= now, idemPurgeBatch per statement.
func (s *Store) PurgeIdempotencyKeys(ctx context.Context, now time.Time) (int64, error) {
	var total int64
	for {
		res, err := s.w(ctx).ExecContext(ctx, purgeIdemQuery, formatTime(now), idemPurgeBatch)
		if err != nil {
			return total, fmt.Errorf("purge idempotency keys: %w", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return total, fmt.Errorf("purge idempotency keys: %w", err)
		}
		total += n
		if n < idemPurgeBatch {
			return total, nil
		}
	}
}

// roundTime is what the store keeps of t.
func roundTime(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// encodeHeader stores no headers as NULL and others as a JSON object of value lists.
func encodeHeader(h http.Header) (sql.NullString, error) {
	if len(h) == 0 {
		return sql.NullString{}, nil
	}
	b, err := json.Marshal(h)
	if err != nil {
		return sql.NullString{}, fmt.Errorf("encode headers: %w", err)
	}
	return sql.NullString{String: string(b), Valid: true}, nil
}
