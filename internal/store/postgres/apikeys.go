// API keys (apikey.Store), table api_keys of migration 00005.
//
// Zero times and an empty PrevHash are stored as NULL ("none"), and no scopes as [] read back as
// nil. Rotation and revocation are compare-and-set UPDATEs. TouchAPIKeys is one statement per call
// that locks the keys it advances in ascending ID order before writing them, so concurrent batches
// (each replica flushes its own) wait on one another instead of deadlocking.

package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/nops-kernel/nops/internal/apikey"
	"github.com/nops-kernel/nops/internal/errs"
)

var _ apikey.Store = (*Store)(nil)

const apiKeyColumns = `id, tenant_id, agent_id, name, role, scopes, created_by, hash, pepper_version,
	prev_hash, prev_pepper_version, prev_valid_until, created_at, expires_at, revoked_at, last_used_at, rotate_by`

// touchAPIKeysQuery takes the IDs ($1) and times ($2) of the uses. u keeps each ID's latest time;
// locked locks, in ID order, the keys it would advance (ORDER BY sorts below the row locks, so
// rows are locked in that order); the UPDATE then writes them. After waiting for a lock, READ
// COMMITTED re-checks the row's newest version, so a later time a concurrent batch wrote is never
// overwritten by an earlier one.
const touchAPIKeysQuery = `WITH u AS (
		SELECT id, max(at) AS at FROM unnest($1::text[], $2::timestamptz[]) AS t(id, at) GROUP BY id
	), locked AS (
		SELECT k.id FROM api_keys k JOIN u ON u.id = k.id
		WHERE k.last_used_at IS NULL OR k.last_used_at < u.at
		ORDER BY k.id FOR NO KEY UPDATE OF k
	)
	UPDATE api_keys k SET last_used_at = u.at FROM locked, u
	WHERE k.id = locked.id AND u.id = k.id AND (k.last_used_at IS NULL OR k.last_used_at < u.at)`

// CreateAPIKey inserts k. A taken ID is an errs.Conflict; an unknown tenant, or an agent that is
// not the tenant's, an errs.NotFound.
func (s *Store) CreateAPIKey(ctx context.Context, k apikey.Key) error {
	scopes := k.Scopes
	if scopes == nil {
		scopes = []string{} // the column holds a JSON array, never null
	}
	_, err := s.q(ctx).Exec(ctx,
		`INSERT INTO api_keys (`+apiKeyColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)`,
		k.ID, k.TenantID, nullString(k.AgentID), k.Name, k.Role, scopes, k.CreatedBy, k.Hash, k.PepperVersion,
		nullBytes(k.PrevHash), k.PrevPepperVersion, nullTime(k.PrevValidUntil), k.CreatedAt,
		nullTime(k.ExpiresAt), nullTime(k.RevokedAt), nullTime(k.LastUsedAt), nullTime(k.RotateBy))
	switch {
	case isUniqueViolation(err):
		return errs.Wrap(errs.Conflict, err, "api key %s already exists", k.ID)
	case isForeignKeyViolation(err):
		return errs.Wrap(errs.NotFound, err, "tenant %s or its agent %q not found", k.TenantID, k.AgentID)
	case err != nil:
		return fmt.Errorf("create api key %s: %w", k.ID, err)
	}
	return nil
}

// APIKey returns the key with id, of any tenant, or an errs.NotFound.
func (s *Store) APIKey(ctx context.Context, id string) (apikey.Key, error) {
	k, err := scanAPIKey(s.q(ctx).QueryRow(ctx, `SELECT `+apiKeyColumns+` FROM api_keys WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return apikey.Key{}, errs.New(errs.NotFound, "api key %s not found", id)
	}
	if err != nil {
		return apikey.Key{}, fmt.Errorf("get api key %s: %w", id, err)
	}
	return k, nil
}

// ListAPIKeys returns at most limit of the tenant's keys with an ID greater than after, in
// ascending ID order, or nil.
func (s *Store) ListAPIKeys(ctx context.Context, tenantID, after string, limit int) ([]apikey.Key, error) {
	rows, err := s.q(ctx).Query(ctx,
		`SELECT `+apiKeyColumns+` FROM api_keys WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3`,
		tenantID, after, limit)
	if err != nil {
		return nil, fmt.Errorf("list api keys of tenant %s: %w", tenantID, err)
	}
	keys, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (apikey.Key, error) { return scanAPIKey(row) })
	if err != nil {
		return nil, fmt.Errorf("list api keys of tenant %s: %w", tenantID, err)
	}
	if len(keys) == 0 {
		return nil, nil
	}
	return keys, nil
}

// RotateAPIKey writes r over the key's hash fields while its hash is still expectHash: an
// errs.Conflict when it is not, an errs.NotFound when there is no such key.
func (s *Store) RotateAPIKey(ctx context.Context, id string, expectHash []byte, r apikey.Rotation) error {
	tag, err := s.q(ctx).Exec(ctx,
		`UPDATE api_keys SET hash = $1, pepper_version = $2, prev_hash = $3, prev_pepper_version = $4, prev_valid_until = $5,
		 rotate_by = NULL WHERE id = $6 AND hash = $7`,
		r.Hash, r.PepperVersion, nullBytes(r.PrevHash), r.PrevPepperVersion, nullTime(r.PrevValidUntil), id, expectHash)
	if err != nil {
		return fmt.Errorf("rotate api key %s: %w", id, err)
	}
	return s.apiKeyWritten(ctx, tag, id, "was rotated concurrently")
}

// RevokeAPIKey sets revoked_at on a key not yet revoked: an errs.Conflict when it already is, an
// errs.NotFound when there is no such key.
func (s *Store) RevokeAPIKey(ctx context.Context, id string, at time.Time) error {
	tag, err := s.q(ctx).Exec(ctx, `UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL`, at, id)
	if err != nil {
		return fmt.Errorf("revoke api key %s: %w", id, err)
	}
	return s.apiKeyWritten(ctx, tag, id, "is already revoked")
}

// RequireAPIKeyRotation sets the key's rotate_by to by unless the key has an earlier deadline
// already (kept: the earliest wins) or is revoked (an errs.Conflict); an errs.NotFound when there
// is no such key.
func (s *Store) RequireAPIKeyRotation(ctx context.Context, id string, by time.Time) error {
	var revoked bool
	err := s.q(ctx).QueryRow(ctx, `UPDATE api_keys SET rotate_by = CASE
			WHEN revoked_at IS NULL AND (rotate_by IS NULL OR rotate_by > $1) THEN $1 ELSE rotate_by END
		WHERE id = $2 RETURNING revoked_at IS NOT NULL`, by, id).Scan(&revoked)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return errs.New(errs.NotFound, "api key %s not found", id)
	case err != nil:
		return fmt.Errorf("require rotation of api key %s: %w", id, err)
	case revoked:
		return errs.New(errs.Conflict, "api key %s is revoked", id)
	}
	return nil
}

// ListAPIKeysDue returns at most limit keys of tenantID ("" for every tenant), not revoked, that
// expire or must be rotated before before, with an ID greater than after, in ascending ID order.
func (s *Store) ListAPIKeysDue(ctx context.Context, tenantID string, before time.Time, after string, limit int) ([]apikey.Key, error) {
	rows, err := s.q(ctx).Query(ctx,
		`SELECT `+apiKeyColumns+` FROM api_keys
		 WHERE ($1 = '' OR tenant_id = $1) AND id > $2 AND revoked_at IS NULL AND (expires_at < $3 OR rotate_by < $3)
		 ORDER BY id LIMIT $4`,
		tenantID, after, before, limit)
	if err != nil {
		return nil, fmt.Errorf("list api keys due of tenant %q: %w", tenantID, err)
	}
	keys, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (apikey.Key, error) { return scanAPIKey(row) })
	if err != nil {
		return nil, fmt.Errorf("list api keys due of tenant %q: %w", tenantID, err)
	}
	if len(keys) == 0 {
		return nil, nil
	}
	return keys, nil
}

// apiKeyWritten turns the result of a conditional write on one key into nil, an errs.NotFound or
// an errs.Conflict saying why the condition failed.
func (s *Store) apiKeyWritten(ctx context.Context, tag pgconn.CommandTag, id, conflict string) error {
	if tag.RowsAffected() == 1 {
		return nil
	}
	exists, err := s.rowExists(ctx, `SELECT 1 FROM api_keys WHERE id = $1`, id)
	if err != nil {
		return fmt.Errorf("write api key %s: %w", id, err)
	}
	if !exists {
		return errs.New(errs.NotFound, "api key %s not found", id)
	}
	return errs.New(errs.Conflict, "api key %s %s", id, conflict)
}

// TouchAPIKeys sets each key's last_used_at to its use's time when that is later, in one
// statement (touchAPIKeysQuery). An ID listed twice counts with its latest time, and IDs of no key
// match nothing.
func (s *Store) TouchAPIKeys(ctx context.Context, uses []apikey.Use) error {
	if len(uses) == 0 {
		return nil
	}
	ids := make([]string, len(uses))
	ats := make([]time.Time, len(uses))
	for i, u := range uses {
		ids[i], ats[i] = u.ID, u.At
	}
	if _, err := s.q(ctx).Exec(ctx, touchAPIKeysQuery, ids, ats); err != nil {
		return fmt.Errorf("touch %d api keys: %w", len(uses), err)
	}
	return nil
}

func scanAPIKey(row pgx.Row) (apikey.Key, error) {
	var (
		k                                              apikey.Key
		agentID                                        *string
		prevValidUntil, expiresAt, revokedAt, lastUsed *time.Time
		rotateBy                                       *time.Time
	)
	err := row.Scan(&k.ID, &k.TenantID, &agentID, &k.Name, &k.Role, &k.Scopes, &k.CreatedBy, &k.Hash, &k.PepperVersion,
		&k.PrevHash, &k.PrevPepperVersion, &prevValidUntil, &k.CreatedAt, &expiresAt, &revokedAt, &lastUsed, &rotateBy)
	if err != nil {
		return apikey.Key{}, err
	}
	if agentID != nil {
		k.AgentID = *agentID
	}
	if len(k.Scopes) == 0 {
		k.Scopes = nil // one empty value for callers, as in the SQLite adapter
	}
	if len(k.PrevHash) == 0 {
		k.PrevHash = nil
	}
	k.CreatedAt = k.CreatedAt.UTC()
	k.PrevValidUntil = timeOrZero(prevValidUntil)
	k.ExpiresAt = timeOrZero(expiresAt)
	k.RevokedAt = timeOrZero(revokedAt)
	k.LastUsedAt = timeOrZero(lastUsed)
	k.RotateBy = timeOrZero(rotateBy)
	return k, nil
}

// nullTime stores the zero time ("none") as NULL.
func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// timeOrZero reads NULL as the zero time, and any other time in UTC.
func timeOrZero(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

// nullBytes stores an empty digest ("none") as NULL.
func nullBytes(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}
