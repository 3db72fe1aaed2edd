// Tenants (tenant.Store), table tenants of migration 00003.
//
// Every statement runs through s.q(ctx), so it joins the caller's InTx transaction. Each method is
// one statement: DeleteTenant removes the tenant's users in a data-modifying CTE of the statement
// that deletes the tenant, so the two happen together, or not at all, without a transaction.

package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/tenant"
)

var _ tenant.Store = (*Store)(nil)

// foreignKeyViolation is PostgreSQL's SQLSTATE for a foreign key constraint violation.
const foreignKeyViolation = "23503"

const tenantColumns = `id, name, display_name, status, created_at, updated_at, version`

// CreateTenant inserts t; a taken name or ID is an errs.Conflict.
func (s *Store) CreateTenant(ctx context.Context, t tenant.Tenant) error {
	_, err := s.q(ctx).Exec(ctx,
		`INSERT INTO tenants (`+tenantColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		t.ID, t.Name, t.DisplayName, string(t.Status), t.CreatedAt, t.UpdatedAt, t.Version)
	if isUniqueViolation(err) {
		return errs.Wrap(errs.Conflict, err, "tenant %q already exists", t.Name)
	}
	if err != nil {
		return fmt.Errorf("create tenant %s: %w", t.ID, err)
	}
	return nil
}

// TenantByID returns the tenant, or an errs.NotFound.
func (s *Store) TenantByID(ctx context.Context, id string) (tenant.Tenant, error) {
	t, err := scanTenant(s.q(ctx).QueryRow(ctx, `SELECT `+tenantColumns+` FROM tenants WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return tenant.Tenant{}, errs.New(errs.NotFound, "tenant %s not found", id)
	}
	if err != nil {
		return tenant.Tenant{}, fmt.Errorf("get tenant %s: %w", id, err)
	}
	return t, nil
}

// ListTenants returns up to limit tenants in (created_at, id) order, strictly after after when it
// is not nil.
func (s *Store) ListTenants(ctx context.Context, after *tenant.Cursor, limit int) ([]tenant.Tenant, error) {
	query := `SELECT ` + tenantColumns + ` FROM tenants ORDER BY created_at, id LIMIT $1`
	args := []any{limit}
	if after != nil {
		query = `SELECT ` + tenantColumns + ` FROM tenants WHERE (created_at, id) > ($1, $2) ORDER BY created_at, id LIMIT $3`
		args = []any{after.CreatedAt, after.ID, limit}
	}
	rows, err := s.q(ctx).Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	ts, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (tenant.Tenant, error) { return scanTenant(row) })
	if err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	if len(ts) == 0 {
		return nil, nil
	}
	return ts, nil
}

// UpdateTenant writes t's display name, status, updated_at and version where the stored version
// is prevVersion: an errs.NotFound when the tenant is gone, an errs.Conflict wrapping
// tenant.ErrVersionConflict when the version differs.
func (s *Store) UpdateTenant(ctx context.Context, t tenant.Tenant, prevVersion int64) error {
	tag, err := s.q(ctx).Exec(ctx,
		`UPDATE tenants SET display_name = $1, status = $2, updated_at = $3, version = $4 WHERE id = $5 AND version = $6`,
		t.DisplayName, string(t.Status), t.UpdatedAt, t.Version, t.ID, prevVersion)
	if err != nil {
		return fmt.Errorf("update tenant %s: %w", t.ID, err)
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	// Nothing matched: tell a vanished tenant from a changed one.
	exists, err := s.rowExists(ctx, `SELECT 1 FROM tenants WHERE id = $1`, t.ID)
	if err != nil {
		return fmt.Errorf("update tenant %s: %w", t.ID, err)
	}
	if !exists {
		return errs.New(errs.NotFound, "tenant %s not found", t.ID)
	}
	return errs.Wrap(errs.Conflict, tenant.ErrVersionConflict, "tenant %s changed since version %d", t.ID, prevVersion)
}

// CountAgents returns how many agents the tenant has.
func (s *Store) CountAgents(ctx context.Context, tenantID string) (int64, error) {
	var n int64
	if err := s.q(ctx).QueryRow(ctx, `SELECT count(*) FROM agents WHERE tenant_id = $1`, tenantID).Scan(&n); err != nil {
		return 0, fmt.Errorf("count agents of tenant %s: %w", tenantID, err)
	}
	return n, nil
}

// DeleteTenantAgents deletes every agent of the tenant (their capabilities and API keys go with
// them, by foreign key) and returns their IDs in registration order, or nil when there were none.
func (s *Store) DeleteTenantAgents(ctx context.Context, tenantID string) ([]string, error) {
	rows, err := s.q(ctx).Query(ctx,
		`WITH d AS (DELETE FROM agents WHERE tenant_id = $1 RETURNING id, created_at)
		 SELECT id FROM d ORDER BY created_at, id`, tenantID)
	if err != nil {
		return nil, fmt.Errorf("delete agents of tenant %s: %w", tenantID, err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("delete agents of tenant %s: %w", tenantID, err)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	return ids, nil
}

// DeleteTenant deletes the tenant with its API keys (foreign key, ON DELETE CASCADE) and its users,
// or returns an errs.NotFound. While agents reference the tenant the foreign key refuses, and that
// is an errs.Conflict with nothing deleted.
func (s *Store) DeleteTenant(ctx context.Context, id string) error {
	var n int64
	err := s.q(ctx).QueryRow(ctx,
		`WITH t AS (DELETE FROM tenants WHERE id = $1 RETURNING id),
		      u AS (DELETE FROM users WHERE tenant_id IN (SELECT id FROM t))
		 SELECT count(*) FROM t`, id).Scan(&n)
	if isForeignKeyViolation(err) {
		return errs.Wrap(errs.Conflict, err, "tenant %s still has agents", id)
	}
	if err != nil {
		return fmt.Errorf("delete tenant %s: %w", id, err)
	}
	if n == 0 {
		return errs.New(errs.NotFound, "tenant %s not found", id)
	}
	return nil
}

func scanTenant(row pgx.Row) (tenant.Tenant, error) {
	var (
		t      tenant.Tenant
		status string
	)
	if err := row.Scan(&t.ID, &t.Name, &t.DisplayName, &status, &t.CreatedAt, &t.UpdatedAt, &t.Version); err != nil {
		return tenant.Tenant{}, err
	}
	t.Status = tenant.Status(status)
	t.CreatedAt, t.UpdatedAt = t.CreatedAt.UTC(), t.UpdatedAt.UTC()
	return t, nil
}

// rowExists reports whether query (a SELECT of at most one row) finds a row. It tells apart the
// reasons a compare-and-set write matched nothing; the answer may be stale outside a transaction,
// which only matters for the error code of a write that lost a race either way.
func (s *Store) rowExists(ctx context.Context, query string, args ...any) (bool, error) {
	var one int
	err := s.q(ctx).QueryRow(ctx, query, args...).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

func isForeignKeyViolation(err error) bool {
	var e *pgconn.PgError
	return errors.As(err, &e) && e.Code == foreignKeyViolation
}
