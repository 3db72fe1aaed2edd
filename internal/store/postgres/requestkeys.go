// Request-signing keys (reqsig.Store) and the nonces of accepted signatures (reqsig.NonceStore),
// tables request_keys and request_nonces of migration 00011.
//
// Zero times and absent material are stored as NULL. Rotation and revocation are compare-and-set
// UPDATEs. ClaimNonce is one upsert that inserts a nonce or replaces a dead row of the same key
// and nonce, and changes nothing while the row is live. Under READ COMMITTED a conflicting insert
// waits for the transaction holding the row, then evaluates the WHERE on the row's latest
// version, so of concurrent claims of one nonce (from any replica) exactly one changes a row. The
// purge's DELETE repeats its condition on the outer statement, which PostgreSQL re-checks on the
// latest version of a row it had to wait for: a row a claim revived meanwhile is kept.

package postgres

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/reqsig"
)

var (
	_ reqsig.Store         = (*Store)(nil)
	_ reqsig.NonceStore    = (*Store)(nil)
	_ reqsig.NoncePurger   = (*Store)(nil)
	_ reqsig.NonceTxRunner = (*Store)(nil)
)

const requestKeyColumns = `id, tenant_id, agent_id, name, alg, created_by, public_key, sealed_secret,
	prev_public_key, prev_sealed_secret, prev_valid_until, generation, created_at, expires_at, revoked_at`

// noncePurgeBatch bounds the rows one purge statement deletes.
const noncePurgeBatch = 1000

const (
	claimNonceQuery = `INSERT INTO request_nonces AS n (key_id, nonce, expires_at) VALUES ($1, $2, $3)
		ON CONFLICT (key_id, nonce) DO UPDATE SET expires_at = EXCLUDED.expires_at
		WHERE n.expires_at <= $4`
	purgeNoncesQuery = `DELETE FROM request_nonces WHERE (key_id, nonce) IN (
		SELECT key_id, nonce FROM request_nonces WHERE expires_at <= $1 LIMIT $2) AND expires_at <= $1`
)

// CreateRequestKey inserts k. A taken ID is an errs.Conflict; an unknown tenant, or an agent
// that is not the tenant's, an errs.NotFound.
func (s *Store) CreateRequestKey(ctx context.Context, k reqsig.Key) error {
	_, err := s.q(ctx).Exec(ctx,
		`INSERT INTO request_keys (`+requestKeyColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`,
		k.ID, k.TenantID, nullString(k.AgentID), k.Name, string(k.Alg), k.CreatedBy,
		nullBytes(k.PublicKey), nullBytes(k.SealedSecret), nullBytes(k.PrevPublicKey), nullBytes(k.PrevSealedSecret),
		nullTime(k.PrevValidUntil), k.Generation, k.CreatedAt, nullTime(k.ExpiresAt), nullTime(k.RevokedAt))
	switch {
	case isUniqueViolation(err):
		return errs.Wrap(errs.Conflict, err, "request key %s already exists", k.ID)
	case isForeignKeyViolation(err):
		return errs.Wrap(errs.NotFound, err, "tenant %s or its agent %q not found", k.TenantID, k.AgentID)
	case err != nil:
		return fmt.Errorf("create request key %s: %w", k.ID, err)
	}
	return nil
}

// RequestKey returns the key with id, of any tenant, or an errs.NotFound.
func (s *Store) RequestKey(ctx context.Context, id string) (reqsig.Key, error) {
	k, err := scanRequestKey(s.q(ctx).QueryRow(ctx, `SELECT `+requestKeyColumns+` FROM request_keys WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return reqsig.Key{}, errs.New(errs.NotFound, "request key %s not found", id)
	}
	if err != nil {
		return reqsig.Key{}, fmt.Errorf("get request key %s: %w", id, err)
	}
	return k, nil
}

// ListRequestKeys returns at most limit of the tenant's keys with an ID greater than after, in
// ascending ID order, or nil.
func (s *Store) ListRequestKeys(ctx context.Context, tenantID, after string, limit int) ([]reqsig.Key, error) {
	rows, err := s.q(ctx).Query(ctx,
		`SELECT `+requestKeyColumns+` FROM request_keys WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3`,
		tenantID, after, limit)
	if err != nil {
		return nil, fmt.Errorf("list request keys of tenant %s: %w", tenantID, err)
	}
	keys, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (reqsig.Key, error) { return scanRequestKey(row) })
	if err != nil {
		return nil, fmt.Errorf("list request keys of tenant %s: %w", tenantID, err)
	}
	if len(keys) == 0 {
		return nil, nil
	}
	return keys, nil
}

// RotateRequestKey writes r over the key's material while its generation is r.Generation-1 and
// it is not revoked: an errs.Conflict otherwise, an errs.NotFound when there is no such key.
func (s *Store) RotateRequestKey(ctx context.Context, id string, r reqsig.Rotation) error {
	tag, err := s.q(ctx).Exec(ctx,
		`UPDATE request_keys SET public_key = $1, sealed_secret = $2, prev_public_key = $3, prev_sealed_secret = $4,
			prev_valid_until = $5, generation = $6
		 WHERE id = $7 AND generation = $8 AND revoked_at IS NULL`,
		nullBytes(r.PublicKey), nullBytes(r.SealedSecret), nullBytes(r.PrevPublicKey), nullBytes(r.PrevSealedSecret),
		nullTime(r.PrevValidUntil), r.Generation, id, r.Generation-1)
	if err != nil {
		return fmt.Errorf("rotate request key %s: %w", id, err)
	}
	return s.requestKeyWritten(ctx, tag, id, "was rotated or revoked concurrently")
}

// RevokeRequestKey sets revoked_at on a key not yet revoked: an errs.Conflict when it already
// is, an errs.NotFound when there is no such key.
func (s *Store) RevokeRequestKey(ctx context.Context, id string, at time.Time) error {
	tag, err := s.q(ctx).Exec(ctx, `UPDATE request_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL`, at, id)
	if err != nil {
		return fmt.Errorf("revoke request key %s: %w", id, err)
	}
	return s.requestKeyWritten(ctx, tag, id, "is already revoked")
}

// requestKeyWritten turns the result of a conditional write on one key into nil, an
// errs.NotFound or an errs.Conflict saying why the condition failed.
func (s *Store) requestKeyWritten(ctx context.Context, tag pgconn.CommandTag, id, conflict string) error {
	if tag.RowsAffected() == 1 {
		return nil
	}
	exists, err := s.rowExists(ctx, `SELECT 1 FROM request_keys WHERE id = $1`, id)
	if err != nil {
		return fmt.Errorf("write request key %s: %w", id, err)
	}
	if !exists {
		return errs.New(errs.NotFound, "request key %s not found", id)
	}
	return errs.New(errs.Conflict, "request key %s %s", id, conflict)
}

// ClaimNonce records nonce for keyID until expiresAt unless a live record exists (see
// reqsig.NonceStore).
func (s *Store) ClaimNonce(ctx context.Context, keyID, nonce string, expiresAt, now time.Time) (bool, error) {
	tag, err := s.q(ctx).Exec(ctx, claimNonceQuery, keyID, nonce, expiresAt, now)
	if err != nil {
		return false, fmt.Errorf("claim nonce of request key %s: %w", keyID, err)
	}
	return tag.RowsAffected() == 1, nil
}

// InNonceTx runs fn in one transaction, as InTx does, committed with durability d
// (reqsig.NonceTxRunner); reqsig.GroupCommitNonces commits its claims through it.
// DurabilityFull is InTx, committed as the server's synchronous_commit says.
// DurabilityProcess sets synchronous_commit off for the transaction alone (SET LOCAL): the
// commit returns before its WAL record is flushed, which the WAL writer does within three
// wal_writer_delay; a crash of the PostgreSQL server may lose it meanwhile, and nothing else
// (the database stays consistent). Inside a transaction fn joins it, with its durability.
func (s *Store) InNonceTx(ctx context.Context, d reqsig.Durability, fn func(ctx context.Context) error) error {
	if _, ok := ctx.Value(txKey{s}).(pgx.Tx); ok || d != reqsig.DurabilityProcess {
		return s.InTx(ctx, fn)
	}
	return s.InTx(ctx, func(ctx context.Context) error {
		if _, err := s.q(ctx).Exec(ctx, "SET LOCAL synchronous_commit = off"); err != nil {
			return fmt.Errorf("relax the commit of nonce claims: %w", err)
		}
		return fn(ctx)
	})
}

// PurgeNonces deletes the nonce records with expires_at <= before, noncePurgeBatch per
// statement.
func (s *Store) PurgeNonces(ctx context.Context, before time.Time) (int64, error) {
	var total int64
	for {
		tag, err := s.q(ctx).Exec(ctx, purgeNoncesQuery, before, noncePurgeBatch)
		if err != nil {
			return total, fmt.Errorf("purge request nonces: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < noncePurgeBatch {
			return total, nil
		}
	}
}

func scanRequestKey(row pgx.Row) (reqsig.Key, error) {
	var (
		k                                    reqsig.Key
		agentID                              *string
		alg                                  string
		pub, prevPub                         []byte
		prevValidUntil, expiresAt, revokedAt *time.Time
	)
	err := row.Scan(&k.ID, &k.TenantID, &agentID, &k.Name, &alg, &k.CreatedBy, &pub, &k.SealedSecret,
		&prevPub, &k.PrevSealedSecret, &prevValidUntil, &k.Generation, &k.CreatedAt, &expiresAt, &revokedAt)
	if err != nil {
		return reqsig.Key{}, err
	}
	if agentID != nil {
		k.AgentID = *agentID
	}
	k.Alg = reqsig.Algorithm(alg)
	if len(pub) > 0 {
		k.PublicKey = ed25519.PublicKey(pub)
	}
	if len(prevPub) > 0 {
		k.PrevPublicKey = ed25519.PublicKey(prevPub)
	}
	if len(k.SealedSecret) == 0 {
		k.SealedSecret = nil
	}
	if len(k.PrevSealedSecret) == 0 {
		k.PrevSealedSecret = nil
	}
	k.CreatedAt = k.CreatedAt.UTC()
	k.PrevValidUntil = timeOrZero(prevValidUntil)
	k.ExpiresAt = timeOrZero(expiresAt)
	k.RevokedAt = timeOrZero(revokedAt)
	return k, nil
}
