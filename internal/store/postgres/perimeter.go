// Per-tenant perimeter settings (perimeter.Store), tables tenant_perimeter and
// tenant_perimeter_generation of migration 00013.
//
// Writes are compare-and-set on version: an insert for version 0 (ON CONFLICT DO NOTHING, so a
// row that exists is a lost race, not an error that would abort the caller's transaction), an
// update where the stored version is the one read otherwise. The trigger of the migration bumps
// the generation. gateway_origins is a text[] of prefixes in their canonical text form.

package postgres

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/perimeter"
)

var _ perimeter.Store = (*Store)(nil)

const perimeterColumns = `tenant_id, require_signatures, gateway_origins, version, updated_at`

// Perimeter returns the tenant's stored settings, or an errs.NotFound when it has none.
func (s *Store) Perimeter(ctx context.Context, tenantID string) (perimeter.Settings, error) {
	st, err := scanPerimeter(s.q(ctx).QueryRow(ctx, `SELECT `+perimeterColumns+` FROM tenant_perimeter WHERE tenant_id = $1`, tenantID))
	if errors.Is(err, pgx.ErrNoRows) {
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
	origins := make([]string, len(st.GatewayOrigins))
	for i, p := range st.GatewayOrigins {
		origins[i] = p.String()
	}
	var (
		tag pgconn.CommandTag
		err error
	)
	if prevVersion == 0 {
		tag, err = s.q(ctx).Exec(ctx,
			`INSERT INTO tenant_perimeter (`+perimeterColumns+`) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id) DO NOTHING`,
			st.TenantID, st.RequireSignatures, origins, st.Version, st.UpdatedAt)
		if isForeignKeyViolation(err) {
			return errs.Wrap(errs.NotFound, err, "tenant %s not found", st.TenantID)
		}
	} else {
		tag, err = s.q(ctx).Exec(ctx,
			`UPDATE tenant_perimeter SET require_signatures = $1, gateway_origins = $2, version = $3, updated_at = $4
			 WHERE tenant_id = $5 AND version = $6`,
			st.RequireSignatures, origins, st.Version, st.UpdatedAt, st.TenantID, prevVersion)
	}
	if err != nil {
		return fmt.Errorf("put perimeter of %s: %w", st.TenantID, err)
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	if prevVersion != 0 {
		exists, err := s.rowExists(ctx, `SELECT 1 FROM tenant_perimeter WHERE tenant_id = $1`, st.TenantID)
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
	rows, err := s.q(ctx).Query(ctx, `SELECT `+perimeterColumns+` FROM tenant_perimeter ORDER BY tenant_id`)
	if err != nil {
		return nil, fmt.Errorf("list perimeters: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (perimeter.Settings, error) { return scanPerimeter(row) })
	if err != nil {
		return nil, fmt.Errorf("list perimeters: %w", err)
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// PerimeterGeneration returns the counter the trigger bumps on every change to tenant_perimeter.
func (s *Store) PerimeterGeneration(ctx context.Context) (int64, error) {
	var gen int64
	if err := s.q(ctx).QueryRow(ctx, `SELECT generation FROM tenant_perimeter_generation WHERE id = 1`).Scan(&gen); err != nil {
		return 0, fmt.Errorf("read perimeter generation: %w", err)
	}
	return gen, nil
}

func scanPerimeter(row pgx.Row) (perimeter.Settings, error) {
	var (
		st      perimeter.Settings
		origins []string
	)
	if err := row.Scan(&st.TenantID, &st.RequireSignatures, &origins, &st.Version, &st.UpdatedAt); err != nil {
		return perimeter.Settings{}, err
	}
	st.UpdatedAt = st.UpdatedAt.UTC()
	if len(origins) > 0 {
		st.GatewayOrigins = make([]netip.Prefix, len(origins))
		for i, t := range origins {
			p, err := netip.ParsePrefix(t)
			if err != nil {
				return perimeter.Settings{}, fmt.Errorf("perimeter of %s: gateway origin %d: %w", st.TenantID, i, err)
			}
			st.GatewayOrigins[i] = p
		}
	}
	return st, nil
}
