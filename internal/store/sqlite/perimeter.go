// Per-tenant perimeter settings (perimeter.Store), tables tenant_perimeter and
// tenant_perimeter_generation of migration 00013.
//
// Writes are compare-and-set on version: an insert for version 0 (ON CONFLICT DO NOTHING, so a
// row that exists is a lost race, not an error that would end the caller's transaction), an
// update where the stored version is the one read otherwise. The triggers of the migration bump
// the generation. gateway_origins is a JSON array of prefixes in their canonical text form.

package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/perimeter"
)

var _ perimeter.Store = (*Store)(nil)

const perimeterColumns = `tenant_id, require_signatures, gateway_origins, version, updated_at`

// Perimeter returns the tenant's stored settings, or an errs.NotFound when it has none.
func (s *Store) Perimeter(ctx context.Context, tenantID string) (perimeter.Settings, error) {
	st, err := scanPerimeter(s.r(ctx).QueryRowContext(ctx, `SELECT `+perimeterColumns+` FROM tenant_perimeter WHERE tenant_id = ?`, tenantID))
	if errors.Is(err, sql.ErrNoRows) {
		return perimeter.Settings{}, errs.New(errs.NotFound, "no perimeter settings for tenant %s", tenantID)
	}
	if err != nil {
		return perimeter.Settings{}, fmt.Errorf("get perimeter of %s: %w", tenantID, err)
	}
	return st, nil
}

// PutPerimeter writes st where the stored version is prevVersion (0: no row yet): an
// errs.Conflict wrapping perimeter.ErrVersionConflict when it differs, an errs.NotFound when the
// tenant does not exist or its row is gone.
func (s *Store) PutPerimeter(ctx context.Context, st perimeter.Settings, prevVersion int64) error {
	origins, err := encodeOrigins(st.GatewayOrigins)
	if err != nil {
		return fmt.Errorf("put perimeter of %s: %w", st.TenantID, err)
	}
	var res sql.Result
	if prevVersion == 0 {
		res, err = s.w(ctx).ExecContext(ctx,
			`INSERT INTO tenant_perimeter (`+perimeterColumns+`) VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant_id) DO NOTHING`,
			st.TenantID, st.RequireSignatures, origins, st.Version, formatTime(st.UpdatedAt))
		if isForeignKeyViolation(err) {
			return errs.Wrap(errs.NotFound, err, "tenant %s not found", st.TenantID)
		}
	} else {
		res, err = s.w(ctx).ExecContext(ctx,
			`UPDATE tenant_perimeter SET require_signatures = ?, gateway_origins = ?, version = ?, updated_at = ?
			 WHERE tenant_id = ? AND version = ?`,
			st.RequireSignatures, origins, st.Version, formatTime(st.UpdatedAt), st.TenantID, prevVersion)
	}
	if err != nil {
		return fmt.Errorf("put perimeter of %s: %w", st.TenantID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("put perimeter of %s: %w", st.TenantID, err)
	}
	if n == 1 {
		return nil
	}
	if prevVersion != 0 {
		exists, err := s.rowExists(ctx, `SELECT 1 FROM tenant_perimeter WHERE tenant_id = ?`, st.TenantID)
		if err != nil {
			return fmt.Errorf("put perimeter of %s: %w", st.TenantID, err)
		}
		if !exists {
			return errs.New(errs.NotFound, "no perimeter settings for tenant %s", st.TenantID)
		}
	}
	return errs.Wrap(errs.Conflict, perimeter.ErrVersionConflict, "perimeter of %s changed since version %d", st.TenantID, prevVersion)
}

// AllPerimeters returns every stored row in tenant order, or nil.
func (s *Store) AllPerimeters(ctx context.Context) ([]perimeter.Settings, error) {
	rows, err := s.r(ctx).QueryContext(ctx, `SELECT `+perimeterColumns+` FROM tenant_perimeter ORDER BY tenant_id`)
	if err != nil {
		return nil, fmt.Errorf("list perimeters: %w", err)
	}
	defer rows.Close()
	var out []perimeter.Settings
	for rows.Next() {
		st, err := scanPerimeter(rows)
		if err != nil {
			return nil, fmt.Errorf("list perimeters: %w", err)
		}
		out = append(out, st)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list perimeters: %w", err)
	}
	return out, nil
}

// PerimeterGeneration returns the counter the triggers bump on every change to tenant_perimeter.
func (s *Store) PerimeterGeneration(ctx context.Context) (int64, error) {
	var gen int64
	if err := s.r(ctx).QueryRowContext(ctx, `SELECT generation FROM tenant_perimeter_generation WHERE id = 1`).Scan(&gen); err != nil {
		return 0, fmt.Errorf("read perimeter generation: %w", err)
	}
	return gen, nil
}

// encodeOrigins stores no origins as [] so the column always holds a JSON array.
func encodeOrigins(ps []netip.Prefix) (string, error) {
	texts := make([]string, len(ps))
	for i, p := range ps {
		texts[i] = p.String()
	}
	b, err := json.Marshal(texts)
	if err != nil {
		return "", fmt.Errorf("encode gateway origins: %w", err)
	}
	return string(b), nil
}

// decodeOrigins returns nil for no origins, so callers see one empty value.
func decodeOrigins(s string) ([]netip.Prefix, error) {
	var texts []string
	if err := json.Unmarshal([]byte(s), &texts); err != nil {
		return nil, fmt.Errorf("decode gateway origins: %w", err)
	}
	if len(texts) == 0 {
		return nil, nil
	}
	out := make([]netip.Prefix, len(texts))
	for i, t := range texts {
		p, err := netip.ParsePrefix(t)
		if err != nil {
			return nil, fmt.Errorf("decode gateway origin %d: %w", i, err)
		}
		out[i] = p
	}
	return out, nil
}

func scanPerimeter(r rowScanner) (perimeter.Settings, error) {
	var (
		st                 perimeter.Settings
		origins, updatedAt string
	)
	if err := r.Scan(&st.TenantID, &st.RequireSignatures, &origins, &st.Version, &updatedAt); err != nil {
		return perimeter.Settings{}, err
	}
	var err error
	if st.GatewayOrigins, err = decodeOrigins(origins); err != nil {
		return perimeter.Settings{}, fmt.Errorf("perimeter of %s: %w", st.TenantID, err)
	}
	if st.UpdatedAt, err = parseTime(updatedAt); err != nil {
		return perimeter.Settings{}, fmt.Errorf("perimeter of %s updated_at: %w", st.TenantID, err)
	}
	return st, nil
}
