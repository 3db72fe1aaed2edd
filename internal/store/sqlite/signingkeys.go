// Token signing keys (token.KeyStore), table signing_keys of migrations 00002, 00018 and 00020
// (sealed_key; a sealed row keeps an empty private_key).
//
// RotateSigningKey runs in one transaction (the caller's, or its own): BEGIN IMMEDIATE holds the
// one writer connection, so rotations are serialised and each reads the current keys the previous
// one left.

package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/token"
)

var _ token.KeyStore = (*Store)(nil)

// CreateSigningKey inserts k; an existing ID is an errs.Conflict.
func (s *Store) CreateSigningKey(ctx context.Context, k token.SigningKey) error {
	_, err := s.w(ctx).ExecContext(ctx,
		`INSERT INTO signing_keys (id, algorithm, private_key, sealed_key, created_at, activates_at, retires_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		k.ID, k.Algorithm, orEmpty(k.Private), nullBytes(k.Sealed), formatTime(k.CreatedAt), nullTimeText(k.ActivatesAt), nullTimeText(k.RetiresAt))
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
	rows, err := s.r(ctx).QueryContext(ctx,
		`SELECT id, algorithm, private_key, sealed_key, created_at, activates_at, retires_at FROM signing_keys ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("list signing keys: %w", err)
	}
	defer rows.Close()
	var keys []token.SigningKey
	for rows.Next() {
		var (
			k                    token.SigningKey
			createdAt            string
			activatesAt, retires sql.NullString
		)
		if err := rows.Scan(&k.ID, &k.Algorithm, &k.Private, &k.Sealed, &createdAt, &activatesAt, &retires); err != nil {
			return nil, fmt.Errorf("list signing keys: %w", err)
		}
		if k.CreatedAt, err = parseTime(createdAt); err != nil {
			return nil, fmt.Errorf("list signing keys: key %s created_at: %w", k.ID, err)
		}
		for _, f := range []struct {
			name string
			src  sql.NullString
			dst  *time.Time
		}{{"activates_at", activatesAt, &k.ActivatesAt}, {"retires_at", retires, &k.RetiresAt}} {
			if !f.src.Valid {
				continue
			}
			if *f.dst, err = parseTime(f.src.String); err != nil {
				return nil, fmt.Errorf("list signing keys: key %s %s: %w", k.ID, f.name, err)
			}
		}
		k.Private, k.Sealed = nilIfEmpty(k.Private), nilIfEmpty(k.Sealed)
		keys = append(keys, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list signing keys: %w", err)
	}
	return keys, nil
}

// RotateSigningKey stores k as the new current key of its algorithm and supersedes the others
// (see token.KeyStore).
func (s *Store) RotateSigningKey(ctx context.Context, k token.SigningKey, overlap time.Duration) (stored token.SigningKey, superseded []string, err error) {
	// Compared and stored at the database's precision, so a bumped activation survives the write.
	k.CreatedAt, k.ActivatesAt = storedTime(k.CreatedAt), storedTime(k.ActivatesAt)
	err = s.InTx(ctx, func(ctx context.Context) error {
		rows, err := s.w(ctx).QueryContext(ctx,
			`SELECT id, COALESCE(activates_at, created_at) FROM signing_keys WHERE algorithm = ? AND retires_at IS NULL ORDER BY created_at, id`,
			k.Algorithm)
		if err != nil {
			return err
		}
		defer rows.Close()
		superseded = nil
		for rows.Next() {
			var id, activation string
			if err := rows.Scan(&id, &activation); err != nil {
				return err
			}
			at, err := parseTime(activation)
			if err != nil {
				return fmt.Errorf("key %s activation: %w", id, err)
			}
			if !k.ActivatesAt.After(at) {
				k.ActivatesAt = at.Add(time.Microsecond)
			}
			superseded = append(superseded, id)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if k.ActivatesAt.IsZero() {
			k.ActivatesAt = k.CreatedAt
		}
		if err := s.CreateSigningKey(ctx, k); err != nil {
			return err
		}
		if len(superseded) > 0 {
			if _, err := s.w(ctx).ExecContext(ctx,
				`UPDATE signing_keys SET retires_at = ? WHERE algorithm = ? AND retires_at IS NULL AND id <> ?`,
				formatTime(k.ActivatesAt.Add(overlap)), k.Algorithm, k.ID); err != nil {
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
	res, err := s.w(ctx).ExecContext(ctx,
		`UPDATE signing_keys SET sealed_key = ?, private_key = x'' WHERE id = ? AND sealed_key IS NULL AND private_key = ?`, sealed, id, clear)
	if err != nil {
		return false, fmt.Errorf("seal signing key %s: %w", id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("seal signing key %s: %w", id, err)
	}
	return n == 1, nil
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
