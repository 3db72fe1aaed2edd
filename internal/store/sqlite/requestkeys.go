// Request-signing keys (reqsig.Store) and the nonces of accepted signatures (reqsig.NonceStore),
// tables request_keys and request_nonces of migration 00011.
//
// Zero times and absent material are stored as NULL. Rotation and revocation are compare-and-set
// UPDATEs. ClaimNonce is one upsert that inserts a nonce or replaces a dead row of the same key
// and nonce, and changes nothing while the row is live: the row count it reports is the answer,
// and SQLite's single writer makes concurrent claims of one nonce take turns. Each claim is a
// write, so it costs a commit (an fsync under synchronous=FULL); reqsig.GroupCommitNonces
// commits the claims that wait meanwhile in one transaction, so the rate of signed requests is
// not bounded by the disk's fsync rate (see docs/request-signing.md).

package sqlite

import (
	"context"
	"crypto/ed25519"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"time"

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

// noncePurgeBatch bounds the rows one purge statement deletes, so that a large purge never holds
// the single writer connection (and every writer behind it) for long.
const noncePurgeBatch = 1000

const (
	claimNonceQuery = `INSERT INTO request_nonces (key_id, nonce, expires_at) VALUES (?, ?, ?)
		ON CONFLICT (key_id, nonce) DO UPDATE SET expires_at = excluded.expires_at
		WHERE request_nonces.expires_at <= ?`
	purgeNoncesQuery = `DELETE FROM request_nonces WHERE rowid IN (
		SELECT rowid FROM request_nonces WHERE expires_at <= ? LIMIT ?) AND expires_at <= ?`
)

// CreateRequestKey inserts k. A taken ID is an errs.Conflict; an unknown tenant, or an agent
// that is not the tenant's, an errs.NotFound.
func (s *Store) CreateRequestKey(ctx context.Context, k reqsig.Key) error {
	_, err := s.w(ctx).ExecContext(ctx,
		`INSERT INTO request_keys (`+requestKeyColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		k.ID, k.TenantID, nullString(k.AgentID), k.Name, string(k.Alg), k.CreatedBy,
		nullBytes(k.PublicKey), nullBytes(k.SealedSecret), nullBytes(k.PrevPublicKey), nullBytes(k.PrevSealedSecret),
		nullTimeText(k.PrevValidUntil), k.Generation, formatTime(k.CreatedAt), nullTimeText(k.ExpiresAt), nullTimeText(k.RevokedAt))
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
	k, err := scanRequestKey(s.r(ctx).QueryRowContext(ctx, `SELECT `+requestKeyColumns+` FROM request_keys WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
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
	rows, err := s.r(ctx).QueryContext(ctx,
		`SELECT `+requestKeyColumns+` FROM request_keys WHERE tenant_id = ? AND id > ? ORDER BY id LIMIT ?`,
		tenantID, after, limit)
	if err != nil {
		return nil, fmt.Errorf("list request keys of tenant %s: %w", tenantID, err)
	}
	defer rows.Close()
	var out []reqsig.Key
	for rows.Next() {
		k, err := scanRequestKey(rows)
		if err != nil {
			return nil, fmt.Errorf("list request keys of tenant %s: %w", tenantID, err)
		}
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list request keys of tenant %s: %w", tenantID, err)
	}
	return out, nil
}

// RotateRequestKey writes r over the key's material while its generation is r.Generation-1 and
// it is not revoked: an errs.Conflict otherwise, an errs.NotFound when there is no such key.
func (s *Store) RotateRequestKey(ctx context.Context, id string, r reqsig.Rotation) error {
	res, err := s.w(ctx).ExecContext(ctx,
		`UPDATE request_keys SET public_key = ?, sealed_secret = ?, prev_public_key = ?, prev_sealed_secret = ?,
			prev_valid_until = ?, generation = ?
		 WHERE id = ? AND generation = ? AND revoked_at IS NULL`,
		nullBytes(r.PublicKey), nullBytes(r.SealedSecret), nullBytes(r.PrevPublicKey), nullBytes(r.PrevSealedSecret),
		nullTimeText(r.PrevValidUntil), r.Generation, id, r.Generation-1)
	if err != nil {
		return fmt.Errorf("rotate request key %s: %w", id, err)
	}
	return s.requestKeyWritten(ctx, res, id, "was rotated or revoked concurrently")
}

// RevokeRequestKey sets revoked_at on a key not yet revoked: an errs.Conflict when it already
// is, an errs.NotFound when there is no such key.
func (s *Store) RevokeRequestKey(ctx context.Context, id string, at time.Time) error {
	res, err := s.w(ctx).ExecContext(ctx,
		`UPDATE request_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL`, formatTime(at), id)
	if err != nil {
		return fmt.Errorf("revoke request key %s: %w", id, err)
	}
	return s.requestKeyWritten(ctx, res, id, "is already revoked")
}

// requestKeyWritten turns the result of a conditional write on one key into nil, an
// errs.NotFound or an errs.Conflict saying why the condition failed.
func (s *Store) requestKeyWritten(ctx context.Context, res sql.Result, id, conflict string) error {
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("write request key %s: %w", id, err)
	}
	if n == 1 {
		return nil
	}
	exists, err := s.rowExists(ctx, `SELECT 1 FROM request_keys WHERE id = ?`, id)
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
	res, err := s.w(ctx).ExecContext(ctx, claimNonceQuery, keyID, nonce, formatTime(expiresAt), formatTime(now))
	if err != nil {
		return false, fmt.Errorf("claim nonce of request key %s: %w", keyID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("claim nonce of request key %s: %w", keyID, err)
	}
	return n == 1, nil
}

// PurgeNonces deletes the nonce records with expires_at <= before, noncePurgeBatch per
// statement.
func (s *Store) PurgeNonces(ctx context.Context, before time.Time) (int64, error) {
	var total int64
	for {
		res, err := s.w(ctx).ExecContext(ctx, purgeNoncesQuery, formatTime(before), noncePurgeBatch, formatTime(before))
		if err != nil {
			return total, fmt.Errorf("purge request nonces: %w", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return total, fmt.Errorf("purge request nonces: %w", err)
		}
		total += n
		if n < noncePurgeBatch {
			return total, nil
		}
	}
}

// InNonceTx runs fn in one transaction on the writer, as InTx does, committed with durability d
// (reqsig.NonceTxRunner); reqsig.GroupCommitNonces commits its claims through it.
// DurabilityFull is InTx. DurabilityProcess commits under synchronous=NORMAL: the writer
// connection is held for the whole of (pragma, transaction, pragma), so no other write commits
// under the relaxed setting, and is set back to FULL before it is released (if that fails the
// connection is closed, and the pool opens a new one with the DSN's FULL). In WAL mode a NORMAL
// commit appends its frames without an fsync; they are durable once the next FULL commit's fsync
// or a checkpoint has run (either syncs the whole log), so writes committed under FULL lose
// nothing by it. Inside a transaction fn joins it, with that transaction's durability.
func (s *Store) InNonceTx(ctx context.Context, d reqsig.Durability, fn func(ctx context.Context) error) (err error) {
	if _, ok := ctx.Value(txKey{s}).(*txConn); ok || d != reqsig.DurabilityProcess {
		return s.InTx(ctx, fn)
	}
	conn, err := s.writer.Conn(ctx)
	if err != nil {
		return fmt.Errorf("sqlite writer for nonce claims: %w", err)
	}
	tc := &txConn{stmts: s.writeStmts}
	defer func() {
		if _, rerr := conn.ExecContext(context.WithoutCancel(ctx), "PRAGMA synchronous = FULL"); rerr != nil {
			_ = conn.Raw(func(any) error { return driver.ErrBadConn }) // close it: never reuse it relaxed
			err = errors.Join(err, fmt.Errorf("restore synchronous=FULL on the sqlite writer: %w", rerr))
		}
		_ = conn.Close()
		tc.prepareLater(ctx) // only now that the writer connection is free again
	}()
	if _, err := conn.ExecContext(ctx, "PRAGMA synchronous = NORMAL"); err != nil {
		return fmt.Errorf("relax the commit of nonce claims: %w", err)
	}
	if tc.tx, err = conn.BeginTx(ctx, nil); err != nil {
		return fmt.Errorf("begin sqlite transaction: %w", err)
	}
	defer func() {
		if p := recover(); p != nil {
			_ = tc.tx.Rollback()
			panic(p)
		}
	}()
	if err := fn(context.WithValue(ctx, txKey{s}, tc)); err != nil {
		if rerr := tc.tx.Rollback(); rerr != nil && !errors.Is(rerr, sql.ErrTxDone) {
			return errors.Join(err, fmt.Errorf("roll back sqlite transaction: %w", rerr))
		}
		return err
	}
	if err := tc.tx.Commit(); err != nil {
		return fmt.Errorf("commit sqlite transaction: %w", err)
	}
	return nil
}

func scanRequestKey(r rowScanner) (reqsig.Key, error) {
	var (
		k                                    reqsig.Key
		agentID                              sql.NullString
		alg, createdAt                       string
		pub, prevPub                         []byte
		prevValidUntil, expiresAt, revokedAt sql.NullString
	)
	err := r.Scan(&k.ID, &k.TenantID, &agentID, &k.Name, &alg, &k.CreatedBy, &pub, &k.SealedSecret,
		&prevPub, &k.PrevSealedSecret, &prevValidUntil, &k.Generation, &createdAt, &expiresAt, &revokedAt)
	if err != nil {
		return reqsig.Key{}, err
	}
	k.AgentID, k.Alg = agentID.String, reqsig.Algorithm(alg)
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
	if k.CreatedAt, err = parseTime(createdAt); err != nil {
		return reqsig.Key{}, fmt.Errorf("request key %s created_at: %w", k.ID, err)
	}
	for _, f := range []struct {
		name string
		src  sql.NullString
		dst  *time.Time
	}{
		{"prev_valid_until", prevValidUntil, &k.PrevValidUntil},
		{"expires_at", expiresAt, &k.ExpiresAt},
		{"revoked_at", revokedAt, &k.RevokedAt},
	} {
		if !f.src.Valid {
			continue
		}
		if *f.dst, err = parseTime(f.src.String); err != nil {
			return reqsig.Key{}, fmt.Errorf("request key %s %s: %w", k.ID, f.name, err)
		}
	}
	return k, nil
}
