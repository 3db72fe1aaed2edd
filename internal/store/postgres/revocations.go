// Revocations of X.509-SVIDs (identity.RevocationStore, mtls.RevocationStore), table
// svid_revocations of migration 00017.
//
// Entries are added, never changed. AddRevocation purges the entries that expired before the new
// one was recorded, in batches through the expires_at index, so the table stays about as large
// as what was revoked within one SVID lifetime. Revocations and ListRevocations read in
// (revoked_at, id) order. Every replica reads the table every few seconds from its cursor
// (revoked_at ≥ since) through svid_revocations_revoked.

package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nops-kernel/nops/internal/identity"
	"github.com/nops-kernel/nops/internal/mtls"
)

var (
	_ identity.RevocationStore = (*Store)(nil)
	_ mtls.RevocationStore     = (*Store)(nil)
)

const revocationColumns = `id, serial, spiffe_id, tenant_id, reason, revoked_at, expires_at, actor`

// revocationPurgeBatch bounds the rows the purge of one AddRevocation deletes; what is left goes
// with the next revocation.
const revocationPurgeBatch = 1000

const purgeRevocationsQuery = `DELETE FROM svid_revocations WHERE id IN (
	SELECT id FROM svid_revocations WHERE expires_at < $1 LIMIT $2)`

// AddRevocation stores rec and purges entries that expired before rec.RevokedAt.
func (s *Store) AddRevocation(ctx context.Context, rec identity.RevocationRecord) error {
	if err := rec.Check(); err != nil {
		return fmt.Errorf("add revocation: %w", err)
	}
	return s.InTx(ctx, func(ctx context.Context) error {
		_, err := s.q(ctx).Exec(ctx,
			`INSERT INTO svid_revocations (`+revocationColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
			rec.ID, nullString(rec.Serial), nullString(rec.SPIFFEID), nullString(rec.TenantID), rec.Reason,
			rec.RevokedAt, rec.ExpiresAt, rec.Actor)
		if err != nil {
			return fmt.Errorf("add revocation %s: %w", rec.ID, err)
		}
		if _, err := s.q(ctx).Exec(ctx, purgeRevocationsQuery, rec.RevokedAt, revocationPurgeBatch); err != nil {
			return fmt.Errorf("purge expired revocations: %w", err)
		}
		return nil
	})
}

// Revocations returns the entries recorded at or after since, in (revoked_at, id) order.
func (s *Store) Revocations(ctx context.Context, since time.Time) ([]mtls.Revocation, error) {
	recs, err := s.queryRevocations(ctx, `SELECT `+revocationColumns+` FROM svid_revocations
		WHERE revoked_at >= $1 ORDER BY revoked_at, id`, since)
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
	q := `SELECT ` + revocationColumns + ` FROM svid_revocations WHERE (revoked_at, id) > ($1, $2)`
	args := []any{f.After.CreatedAt, f.After.ID}
	switch {
	case f.AllTenants:
	case f.TenantID == "":
		q += ` AND tenant_id IS NULL`
	default:
		args = append(args, f.TenantID)
		q += fmt.Sprintf(` AND tenant_id = $%d`, len(args))
	}
	if !f.ExpiresAfter.IsZero() {
		args = append(args, f.ExpiresAfter)
		q += fmt.Sprintf(` AND expires_at > $%d`, len(args))
	}
	args = append(args, f.Limit)
	q += fmt.Sprintf(` ORDER BY revoked_at, id LIMIT $%d`, len(args))
	recs, err := s.queryRevocations(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list revocations: %w", err)
	}
	if len(recs) == 0 {
		return nil, nil
	}
	return recs, nil
}

func (s *Store) queryRevocations(ctx context.Context, q string, args ...any) ([]identity.RevocationRecord, error) {
	rows, err := s.q(ctx).Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (identity.RevocationRecord, error) {
		var (
			rec                      identity.RevocationRecord
			serial, spiffeID, tenant *string
		)
		if err := row.Scan(&rec.ID, &serial, &spiffeID, &tenant, &rec.Reason, &rec.RevokedAt, &rec.ExpiresAt, &rec.Actor); err != nil {
			return rec, err
		}
		rec.Serial, rec.SPIFFEID, rec.TenantID = deref(serial), deref(spiffeID), deref(tenant)
		rec.RevokedAt, rec.ExpiresAt = rec.RevokedAt.UTC(), rec.ExpiresAt.UTC()
		return rec, nil
	})
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
