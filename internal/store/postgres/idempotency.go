// The API's Idempotency-Key records (idempotency.Store), table idempotency_keys of migration 00008.
//
// ReserveIdempotencyKey is one upsert: INSERT … ON CONFLICT DO UPDATE … WHERE the existing row is
// dead. Under READ COMMITTED, PostgreSQL makes a conflicting insert wait for the transaction that
// holds the row and then evaluates the WHERE on the row's latest version, so of concurrent
// reservations exactly one inserts or replaces; the others update nothing. Such a loser then
// reads the row that refused it. That read is a second statement: should the row be released or
// purged in between, the reservation is simply tried again (a bounded number of times).

package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/idempotency"
)

// idemPurgeBatch bounds the rows one purge statement deletes.
const idemPurgeBatch = 500

// reserveIdemAttempts bounds the rounds of upsert-then-read in one reservation.
const reserveIdemAttempts = 5

const (
	// reserveIdemQuery inserts a reservation, or replaces a row dead at $9 (now): expired, or in
	// flight past its lock with the same fingerprint.
	reserveIdemQuery = `INSERT INTO idempotency_keys AS k
		(tenant, principal, idem_key, fingerprint, token, state, created_at, locked_until, expires_at)
		VALUES ($1, $2, $3, $4, $5, 'in_flight', $6, $7, $8)
		ON CONFLICT (tenant, principal, idem_key) DO UPDATE SET
			fingerprint = EXCLUDED.fingerprint, token = EXCLUDED.token, state = 'in_flight',
			created_at = EXCLUDED.created_at, locked_until = EXCLUDED.locked_until,
			expires_at = EXCLUDED.expires_at, status = NULL, header = NULL, body = NULL
		WHERE k.expires_at <= $9
		   OR (k.state = 'in_flight' AND k.locked_until <= $9 AND k.fingerprint = EXCLUDED.fingerprint)`
	readIdemQuery = `SELECT fingerprint, token, state, created_at, locked_until, expires_at, status, header, body
		FROM idempotency_keys WHERE tenant = $1 AND principal = $2 AND idem_key = $3`
	purgeIdemQuery = `DELETE FROM idempotency_keys WHERE (tenant, principal, idem_key) IN (
		SELECT tenant, principal, idem_key FROM idempotency_keys WHERE expires_at <= $1 LIMIT $2)`
)

var _ idempotency.Store = (*Store)(nil)

// errIdemGone reports that the row refusing a reservation vanished before it could be read.
var errIdemGone = errors.New("the record that refused the reservation is gone")

// ReserveIdempotencyKey stores r unless a live record of its scope and key exists, which it then
// returns (see idempotency.Store).
func (s *Store) ReserveIdempotencyKey(ctx context.Context, r idempotency.Record, now time.Time) (idempotency.Record, bool, error) {
	if err := r.ValidateReservation(); err != nil {
		return idempotency.Record{}, false, fmt.Errorf("reserve idempotency key: %w", err)
	}
	for range reserveIdemAttempts {
		tag, err := s.q(ctx).Exec(ctx, reserveIdemQuery,
			r.Scope.Tenant, r.Scope.Principal, r.Key, r.Fingerprint[:], r.Token,
			r.CreatedAt, r.LockedUntil, r.ExpiresAt, now)
		if err != nil {
			return idempotency.Record{}, false, fmt.Errorf("reserve idempotency key: %w", err)
		}
		if tag.RowsAffected() == 1 {
			out := r
			out.CreatedAt, out.LockedUntil, out.ExpiresAt = roundTime(r.CreatedAt), roundTime(r.LockedUntil), roundTime(r.ExpiresAt)
			return out, true, nil
		}
		existing, err := s.readIdem(ctx, r.Scope, r.Key)
		if errors.Is(err, errIdemGone) {
			continue
		}
		if err != nil {
			return idempotency.Record{}, false, fmt.Errorf("reserve idempotency key: %w", err)
		}
		return existing, false, nil
	}
	return idempotency.Record{}, false, fmt.Errorf("reserve idempotency key: %w", errIdemGone)
}

// readIdem reads the record of scope and key, or returns errIdemGone.
func (s *Store) readIdem(ctx context.Context, scope idempotency.Scope, key string) (idempotency.Record, error) {
	var (
		r        = idempotency.Record{Scope: scope, Key: key}
		fp, body []byte
		state    string
		status   *int32
		header   *string
	)
	err := s.q(ctx).QueryRow(ctx, readIdemQuery, scope.Tenant, scope.Principal, key).
		Scan(&fp, &r.Token, &state, &r.CreatedAt, &r.LockedUntil, &r.ExpiresAt, &status, &header, &body)
	if errors.Is(err, pgx.ErrNoRows) {
		return idempotency.Record{}, errIdemGone
	}
	if err != nil {
		return idempotency.Record{}, err
	}
	if len(fp) != len(r.Fingerprint) {
		return idempotency.Record{}, fmt.Errorf("fingerprint of %d bytes", len(fp))
	}
	copy(r.Fingerprint[:], fp)
	r.State = idempotency.State(state)
	r.CreatedAt, r.LockedUntil, r.ExpiresAt = r.CreatedAt.UTC(), r.LockedUntil.UTC(), r.ExpiresAt.UTC()
	if r.State == idempotency.Completed {
		if status == nil {
			return idempotency.Record{}, errors.New("completed record without a status")
		}
		resp := idempotency.Response{Status: int(*status)}
		if header != nil {
			if err := json.Unmarshal([]byte(*header), &resp.Header); err != nil {
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
	tag, err := s.q(ctx).Exec(ctx,
		`UPDATE idempotency_keys SET state = 'completed', status = $1, header = $2, body = $3, expires_at = $4
		 WHERE tenant = $5 AND principal = $6 AND idem_key = $7 AND token = $8 AND state = 'in_flight'`,
		resp.Status, header, resp.Body, expiresAt, scope.Tenant, scope.Principal, key, token)
	if err != nil {
		return fmt.Errorf("complete idempotency key: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return errs.New(errs.Conflict, "the idempotency key is no longer held by this request")
	}
	return nil
}

// ReleaseIdempotencyKey deletes the in-flight record token holds, if any.
func (s *Store) ReleaseIdempotencyKey(ctx context.Context, scope idempotency.Scope, key, token string) error {
	if err := idempotency.ValidateToken(token); err != nil {
		return fmt.Errorf("release idempotency key: %w", err)
	}
	_, err := s.q(ctx).Exec(ctx,
		`DELETE FROM idempotency_keys WHERE tenant = $1 AND principal = $2 AND idem_key = $3 AND token = $4 AND state = 'in_flight'`,
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
		tag, err := s.q(ctx).Exec(ctx, purgeIdemQuery, now, idemPurgeBatch)
		if err != nil {
			return total, fmt.Errorf("purge idempotency keys: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < idemPurgeBatch {
			return total, nil
		}
	}
}

// roundTime is what the store keeps of t.
func roundTime(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// encodeHeader stores no headers as NULL and others as a JSON object of value lists.
func encodeHeader(h http.Header) (*string, error) {
	if len(h) == 0 {
		return nil, nil
	}
	b, err := json.Marshal(h)
	if err != nil {
		return nil, fmt.Errorf("encode headers: %w", err)
	}
	out := string(b)
	return &out, nil
}
