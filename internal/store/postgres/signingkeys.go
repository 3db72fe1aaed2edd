// Token signing keys (token.KeyStore), table signing_keys of migrations 00002, 00018 and 00020
// (sealed_key; a sealed row keeps an empty private_key).
//
// RotateSigningKey runs in one transaction (the caller's, or its own) that first takes
// LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE: that mode conflicts with itself, so
// rotations on any replica are serialised, and under READ COMMITTED each statement after the lock
// sees the keys the previous rotation committed. Plain reads (ACCESS SHARE) are never blocked.

package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/token"
)

var _ token.KeyStore = (*Store)(nil)

// CreateSigningKey inserts k; an existing ID is an errs.Conflict.
func (s *Store) CreateSigningKey(ctx context.Context, k token.SigningKey) error {
	_, err := s.q(ctx).Exec(ctx,
		`INSERT INTO signing_keys (id, algorithm, private_key, sealed_key, created_at, activates_at, retires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		k.ID, k.Algorithm, orEmpty(k.Private), nullBytes(k.Sealed), k.CreatedAt, nullTime(k.ActivatesAt), nullTime(k.RetiresAt))
	if isUniqueViolation(err) {
		return errs.Wrap(errs.Conflict, err, "signing key %q already exists", k.ID)
	}
	if err != nil {
		return fmt.Errorf("create signing key %s: %w", k.ID, err)
	}
	return nil
}

// SigningKeys returns every stored key, oldest first (by creation time, then ID).
func (s *Store) SigningKeys(ctx context.Context) ([]token.SigningKey, error) {
	rows, err := s.q(ctx).Query(ctx,
		`SELECT id, algorithm, private_key, sealed_key, created_at, activates_at, retires_at FROM signing_keys ORDER BY created_at, id COLLATE "C"`)
	if err != nil {
		return nil, fmt.Errorf("list signing keys: %w", err)
	}
	keys, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (token.SigningKey, error) {
		var (
			k                  token.SigningKey
			activates, retires *time.Time
		)
		err := row.Scan(&k.ID, &k.Algorithm, &k.Private, &k.Sealed, &k.CreatedAt, &activates, &retires)
		k.Private, k.Sealed = nilIfEmpty(k.Private), nilIfEmpty(k.Sealed)
		k.CreatedAt, k.ActivatesAt, k.RetiresAt = k.CreatedAt.UTC(), timeOrZero(activates), timeOrZero(retires)
		return k, err
	})
	if err != nil {
		return nil, fmt.Errorf("list signing keys: %w", err)
	}
	if len(keys) == 0 {
		return nil, nil
	}
	return keys, nil
}

// RotateSigningKey stores k as the new current key of its algorithm and supersedes the others
// (see token.KeyStore).
func (s *Store) RotateSigningKey(ctx context.Context, k token.SigningKey, overlap time.Duration) (stored token.SigningKey, superseded []string, err error) {
	// Compared and stored at the database's precision, so a bumped activation survives the write.
	k.CreatedAt, k.ActivatesAt = storedTime(k.CreatedAt), storedTime(k.ActivatesAt)
	err = s.InTx(ctx, func(ctx context.Context) error {
		q := s.q(ctx)
		if _, err := q.Exec(ctx, `LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE`); err != nil {
			return err
		}
		rows, err := q.Query(ctx,
			`SELECT id, COALESCE(activates_at, created_at) FROM signing_keys WHERE algorithm = $1 AND retires_at IS NULL ORDER BY created_at, id COLLATE "C"`,
			k.Algorithm)
		if err != nil {
			return err
		}
		type current struct {
			id string
			at time.Time
		}
		cur, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (current, error) {
			var c current
			err := row.Scan(&c.id, &c.at)
			return c, err
		})
		if err != nil {
			return err
		}
		superseded = nil
		for _, c := range cur {
			if !k.ActivatesAt.After(c.at) {
				k.ActivatesAt = c.at.Add(time.Microsecond)
			}
			superseded = append(superseded, c.id)
		}
		if k.ActivatesAt.IsZero() {
			k.ActivatesAt = k.CreatedAt
		}
		if err := s.CreateSigningKey(ctx, k); err != nil {
			return err
		}
		if len(superseded) > 0 {
			if _, err := q.Exec(ctx,
				`UPDATE signing_keys SET retires_at = $1 WHERE algorithm = $2 AND retires_at IS NULL AND id <> $3`,
				k.ActivatesAt.Add(overlap), k.Algorithm, k.ID); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		if errs.As(err) != nil {
			return token.SigningKey{}, nil, err
		}
		return token.SigningKey{}, nil, fmt.Errorf("rotate signing key %s: %w", k.ID, err)
	}
	return k, superseded, nil
}

// SealSigningKey seals a key stored in clear (see token.KeyStore).
func (s *Store) SealSigningKey(ctx context.Context, id string, clear, sealed []byte) (bool, error) {
	if len(clear) == 0 || len(sealed) == 0 {
		return false, fmt.Errorf("seal signing key %s: empty clear or sealed value", id)
	}
	tag, err := s.q(ctx).Exec(ctx,
		`UPDATE signing_keys SET sealed_key = $1, private_key = ''::bytea WHERE id = $2 AND sealed_key IS NULL AND private_key = $3`, sealed, id, clear)
	if err != nil {
		return false, fmt.Errorf("seal signing key %s: %w", id, err)
	}
	return tag.RowsAffected() == 1, nil
}

// orEmpty is b, or an empty (not NULL) value when b is nil: private_key is NOT NULL.
func orEmpty(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// nilIfEmpty normalises an empty column to nil.
func nilIfEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

// storedTime is t as the database keeps it: UTC, microseconds.
func storedTime(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return t.UTC().Truncate(time.Microsecond)
}
