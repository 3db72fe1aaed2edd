// Revocations of X.509-SVIDs (identity.RevocationStore, mtls.RevocationStore), table
// svid_revocations of migration 00017.
//
// Entries are added, never changed. AddRevocation purges the entries that expired before the new
// one was recorded, in batches by rowid through the expires_at index, so the table stays about
// as large as what was revoked within one SVID lifetime. Revocations and ListRevocations read in
// (revoked_at, id) order; the fixed-width time text makes text order time order.

package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/nops-kernel/nops/internal/identity"
	"github.com/nops-kernel/nops/internal/mtls"
)

var (
	_ identity.RevocationStore = (*Store)(nil)
	_ mtls.RevocationStore     = (*Store)(nil)
)

const revocationColumns = `id, serial, spiffe_id, tenant_id, reason, revoked_at, expires_at, actor`

// revocationPurgeBatch bounds the rows the purge of one AddRevocation deletes, so that it never
// holds the writer for long; what is left goes with the next revocation.
const revocationPurgeBatch = 1000

const purgeRevocationsQuery = `DELETE FROM svid_revocations WHERE rowid IN (
	SELECT rowid FROM svid_revocations WHERE expires_at < ? LIMIT ?)`

// AddRevocation stores rec and purges entries that expired before rec.RevokedAt.
func (s *Store) AddRevocation(ctx context.Context, rec identity.RevocationRecord) error {
	if err := rec.Check(); err != nil {
		return fmt.Errorf("add revocation: %w", err)
	}
	return s.InTx(ctx, func(ctx context.Context) error {
		_, err := s.w(ctx).ExecContext(ctx,
			`INSERT INTO svid_revocations (`+revocationColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			rec.ID, nullString(rec.Serial), nullString(rec.SPIFFEID), nullString(rec.TenantID), rec.Reason,
			formatTime(rec.RevokedAt), formatTime(rec.ExpiresAt), rec.Actor)
		if err != nil {
			return fmt.Errorf("add revocation %s: %w", rec.ID, err)
		}
		if _, err := s.w(ctx).ExecContext(ctx, purgeRevocationsQuery, formatTime(rec.RevokedAt), revocationPurgeBatch); err != nil {
			return fmt.Errorf("purge expired revocations: %w", err)
		}
		return nil
	})
}

// Revocations returns the entries recorded at or after since, in (revoked_at, id) order.
func (s *Store) Revocations(ctx context.Context, since time.Time) ([]mtls.Revocation, error) {
	recs, err := s.queryRevocations(ctx, `SELECT `+revocationColumns+` FROM svid_revocations
		WHERE revoked_at >= ? ORDER BY revoked_at, id`, formatTime(since))
	if err != nil {
		return nil, fmt.Errorf("read revocations since %s: %w", since.UTC().Format(time.RFC3339Nano), err)
	}
	out := make([]mtls.Revocation, 0, len(recs))
	for _, rec := range recs {
		r, err := rec.Revocation()
		if err != nil {
			return nil, fmt.Errorf("read revocations: %w", err)
		}
		out = append(out, r)
	}
	return out, nil
}

// ListRevocations returns at most f.Limit entries matching f in (revoked_at, id) order, or nil.
func (s *Store) ListRevocations(ctx context.Context, f identity.RevocationFilter) ([]identity.RevocationRecord, error) {
	q := `SELECT ` + revocationColumns + ` FROM svid_revocations WHERE (revoked_at, id) > (?, ?)`
	args := []any{formatTime(f.After.CreatedAt), f.After.ID}
	switch {
	case f.AllTenants:
	case f.TenantID == "":
		q += ` AND tenant_id IS NULL`
	default:
		q += ` AND tenant_id = ?`
		args = append(args, f.TenantID)
	}
	if !f.ExpiresAfter.IsZero() {
		q += ` AND expires_at > ?`
		args = append(args, formatTime(f.ExpiresAfter))
	}
	q += ` ORDER BY revoked_at, id LIMIT ?`
	args = append(args, f.Limit)
	recs, err := s.queryRevocations(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list revocations: %w", err)
	}
	return recs, nil
}

func (s *Store) queryRevocations(ctx context.Context, q string, args ...any) ([]identity.RevocationRecord, error) {
	rows, err := s.r(ctx).QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []identity.RevocationRecord
	for rows.Next() {
		var (
			rec                      identity.RevocationRecord
			serial, spiffeID, tenant sql.NullString
			revokedAt, expiresAt     string
		)
		if err := rows.Scan(&rec.ID, &serial, &spiffeID, &tenant, &rec.Reason, &revokedAt, &expiresAt, &rec.Actor); err != nil {
			return nil, err
		}
		rec.Serial, rec.SPIFFEID, rec.TenantID = serial.String, spiffeID.String, tenant.String
		if rec.RevokedAt, err = parseTime(revokedAt); err != nil {
			return nil, fmt.Errorf("revocation %s revoked_at: %w", rec.ID, err)
		}
		if rec.ExpiresAt, err = parseTime(expiresAt); err != nil {
			return nil, fmt.Errorf("revocation %s expires_at: %w", rec.ID, err)
		}
		out = append(out, rec)
	}
	return out, rows.Err()
}
