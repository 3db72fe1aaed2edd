// API keys (apikey.Store), table api_keys of migration 00005.
//
// Zero times and an empty PrevHash are stored as NULL ("none"), and no scopes as [] read back as
// nil. Rotation and revocation are compare-and-set UPDATEs; TouchAPIKeys is one UPDATE per call,
// whatever the number of keys, because the uses travel as one JSON parameter rather than as
// SQLite's bounded number of bind variables.

package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nops-kernel/nops/internal/apikey"
	"github.com/nops-kernel/nops/internal/errs"
)

var _ apikey.Store = (*Store)(nil)

const apiKeyColumns = `id, tenant_id, agent_id, name, role, scopes, created_by, hash, pepper_version,
	prev_hash, prev_pepper_version, prev_valid_until, created_at, expires_at, revoked_at, last_used_at, rotate_by`

// CreateAPIKey inserts k. A taken ID is an errs.Conflict; an unknown tenant, or an agent that is
// not the tenant's, an errs.NotFound.
func (s *Store) CreateAPIKey(ctx context.Context, k apikey.Key) error {
	scopes, err := encodeRoles(k.Scopes) // the same shape as roles: a JSON array of strings
	if err != nil {
		return fmt.Errorf("create api key %s: %w", k.ID, err)
	}
	_, err = s.w(ctx).ExecContext(ctx,
		`INSERT INTO api_keys (`+apiKeyColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		k.ID, k.TenantID, nullString(k.AgentID), k.Name, k.Role, scopes, k.CreatedBy, k.Hash, k.PepperVersion,
		nullBytes(k.PrevHash), k.PrevPepperVersion, nullTimeText(k.PrevValidUntil), formatTime(k.CreatedAt),
		nullTimeText(k.ExpiresAt), nullTimeText(k.RevokedAt), nullTimeText(k.LastUsedAt), nullTimeText(k.RotateBy))
	switch {
	case isUniqueViolation(err):
		return errs.Wrap(errs.Conflict, err, "api key %s already exists", k.ID)
	case isForeignKeyViolation(err):
		// SQLite does not say which key failed; both mean a reference to nothing.
		return errs.Wrap(errs.NotFound, err, "tenant %s or its agent %q not found", k.TenantID, k.AgentID)
	case err != nil:
		return fmt.Errorf("create api key %s: %w", k.ID, err)
	}
	return nil
}

// APIKey returns the key with id, of any tenant, or an errs.NotFound.
func (s *Store) APIKey(ctx context.Context, id string) (apikey.Key, error) {
	k, err := scanAPIKey(s.r(ctx).QueryRowContext(ctx, `SELECT `+apiKeyColumns+` FROM api_keys WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
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
	rows, err := s.r(ctx).QueryContext(ctx,
		`SELECT `+apiKeyColumns+` FROM api_keys WHERE tenant_id = ? AND id > ? ORDER BY id LIMIT ?`,
		tenantID, after, limit)
	if err != nil {
		return nil, fmt.Errorf("list api keys of tenant %s: %w", tenantID, err)
	}
	defer rows.Close()
	var out []apikey.Key
	for rows.Next() {
		k, err := scanAPIKey(rows)
		if err != nil {
			return nil, fmt.Errorf("list api keys of tenant %s: %w", tenantID, err)
		}
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list api keys of tenant %s: %w", tenantID, err)
	}
	return out, nil
}

// RotateAPIKey writes r over the key's hash fields while its hash is still expectHash: an
// errs.Conflict when it is not, an errs.NotFound when there is no such key.
func (s *Store) RotateAPIKey(ctx context.Context, id string, expectHash []byte, r apikey.Rotation) error {
	res, err := s.w(ctx).ExecContext(ctx,
		`UPDATE api_keys SET hash = ?, pepper_version = ?, prev_hash = ?, prev_pepper_version = ?, prev_valid_until = ?,
		 rotate_by = NULL WHERE id = ? AND hash = ?`,
		r.Hash, r.PepperVersion, nullBytes(r.PrevHash), r.PrevPepperVersion, nullTimeText(r.PrevValidUntil), id, expectHash)
	if err != nil {
		return fmt.Errorf("rotate api key %s: %w", id, err)
	}
	return s.apiKeyWritten(ctx, res, id, "was rotated concurrently")
}

// RevokeAPIKey sets revoked_at on a key not yet revoked: an errs.Conflict when it already is, an
// errs.NotFound when there is no such key.
func (s *Store) RevokeAPIKey(ctx context.Context, id string, at time.Time) error {
	res, err := s.w(ctx).ExecContext(ctx,
		`UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL`, formatTime(at), id)
	if err != nil {
		return fmt.Errorf("revoke api key %s: %w", id, err)
	}
	return s.apiKeyWritten(ctx, res, id, "is already revoked")
}

// RequireAPIKeyRotation sets the key's rotate_by to by unless the key has an earlier deadline
// already (kept: the earliest wins) or is revoked (an errs.Conflict); an errs.NotFound when there
// is no such key. The fixed-width time text compares as time.
func (s *Store) RequireAPIKeyRotation(ctx context.Context, id string, by time.Time) error {
	var revoked bool
	err := s.w(ctx).QueryRowContext(ctx, `UPDATE api_keys SET rotate_by = CASE
			WHEN revoked_at IS NULL AND (rotate_by IS NULL OR rotate_by > ?1) THEN ?1 ELSE rotate_by END
		WHERE id = ?2 RETURNING revoked_at IS NOT NULL`, formatTime(by), id).Scan(&revoked)
	switch {
	case errors.Is(err, sql.ErrNoRows):
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
	rows, err := s.r(ctx).QueryContext(ctx,
		`SELECT `+apiKeyColumns+` FROM api_keys
		 WHERE (?1 = '' OR tenant_id = ?1) AND id > ?2 AND revoked_at IS NULL AND (expires_at < ?3 OR rotate_by < ?3)
		 ORDER BY id LIMIT ?4`,
		tenantID, after, formatTime(before), limit)
	if err != nil {
		return nil, fmt.Errorf("list api keys due of tenant %q: %w", tenantID, err)
	}
	defer rows.Close()
	var out []apikey.Key
	for rows.Next() {
		k, err := scanAPIKey(rows)
		if err != nil {
			return nil, fmt.Errorf("list api keys due of tenant %q: %w", tenantID, err)
		}
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list api keys due of tenant %q: %w", tenantID, err)
	}
	return out, nil
}

// apiKeyWritten turns the result of a conditional write on one key into nil, an errs.NotFound or
// an errs.Conflict saying why the condition failed.
func (s *Store) apiKeyWritten(ctx context.Context, res sql.Result, id, conflict string) error {
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("write api key %s: %w", id, err)
	}
	if n == 1 {
		return nil
	}
	exists, err := s.rowExists(ctx, `SELECT 1 FROM api_keys WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("write api key %s: %w", id, err)
	}
	if !exists {
		return errs.New(errs.NotFound, "api key %s not found", id)
	}
	return errs.New(errs.Conflict, "api key %s %s", id, conflict)
}

// apiKeyUse is one element of TouchAPIKeys' JSON parameter.
type apiKeyUse struct {
	ID string `json:"i"`
	At string `json:"t"`
}

// TouchAPIKeys sets each key's last_used_at to its use's time when that is later, in one
// statement. The fixed-width time text compares as time, so max() and < are time order; an ID
// listed twice counts with its latest time, and IDs of no key match nothing. Every write holds the
// database's one write lock, so the order rows are written in does not matter here.
func (s *Store) TouchAPIKeys(ctx context.Context, uses []apikey.Use) error {
	if len(uses) == 0 {
		return nil
	}
	param := make([]apiKeyUse, len(uses))
	for i, u := range uses {
		param[i] = apiKeyUse{ID: u.ID, At: formatTime(u.At)}
	}
	b, err := json.Marshal(param)
	if err != nil {
		return fmt.Errorf("touch %d api keys: %w", len(uses), err)
	}
	_, err = s.w(ctx).ExecContext(ctx,
		`UPDATE api_keys SET last_used_at = u.at
		 FROM (SELECT j.value ->> '$.i' AS id, max(j.value ->> '$.t') AS at FROM json_each(?) j GROUP BY 1) u
		 WHERE api_keys.id = u.id AND (api_keys.last_used_at IS NULL OR api_keys.last_used_at < u.at)`,
		string(b))
	if err != nil {
		return fmt.Errorf("touch %d api keys: %w", len(uses), err)
	}
	return nil
}

func scanAPIKey(r rowScanner) (apikey.Key, error) {
	var (
		k                                              apikey.Key
		agentID                                        sql.NullString
		scopes, createdAt                              string
		prevValidUntil, expiresAt, revokedAt, lastUsed sql.NullString
		rotateBy                                       sql.NullString
	)
	err := r.Scan(&k.ID, &k.TenantID, &agentID, &k.Name, &k.Role, &scopes, &k.CreatedBy, &k.Hash, &k.PepperVersion,
		&k.PrevHash, &k.PrevPepperVersion, &prevValidUntil, &createdAt, &expiresAt, &revokedAt, &lastUsed, &rotateBy)
	if err != nil {
		return apikey.Key{}, err
	}
	k.AgentID = agentID.String
	if k.Scopes, err = decodeRoles(scopes); err != nil {
		return apikey.Key{}, fmt.Errorf("api key %s scopes: %w", k.ID, err)
	}
	if k.CreatedAt, err = parseTime(createdAt); err != nil {
		return apikey.Key{}, fmt.Errorf("api key %s created_at: %w", k.ID, err)
	}
	for _, f := range []struct {
		name string
		src  sql.NullString
		dst  *time.Time
	}{
		{"prev_valid_until", prevValidUntil, &k.PrevValidUntil},
		{"expires_at", expiresAt, &k.ExpiresAt},
		{"revoked_at", revokedAt, &k.RevokedAt},
		{"last_used_at", lastUsed, &k.LastUsedAt},
		{"rotate_by", rotateBy, &k.RotateBy},
	} {
		if !f.src.Valid {
			continue
		}
		if *f.dst, err = parseTime(f.src.String); err != nil {
			return apikey.Key{}, fmt.Errorf("api key %s %s: %w", k.ID, f.name, err)
		}
	}
	return k, nil
}

// nullTimeText stores the zero time ("none") as NULL.
func nullTimeText(t time.Time) sql.NullString {
	if t.IsZero() {
		return sql.NullString{}
	}
	return sql.NullString{String: formatTime(t), Valid: true}
}

// nullBytes stores an empty digest ("none") as NULL, which scans back as nil. It returns an
// untyped nil, not a nil []byte, which a driver may bind as an empty blob.
func nullBytes(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}
