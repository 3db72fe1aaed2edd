// Tenants (tenant.Store), table tenants of migration 00003.
//
// Every statement runs through s.w(ctx) or s.r(ctx), so it joins the caller's InTx transaction.
// DeleteTenant needs two statements (the tenant, then its users, which have no foreign key to
// tenants); it runs them through InTx, which joins the caller's transaction or, without one, makes
// one for the call, so a failure never leaves half a deletion.

package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/tenant"
)

var _ tenant.Store = (*Store)(nil)

const tenantColumns = `id, name, display_name, status, created_at, updated_at, version`

// CreateTenant inserts t; a taken name or ID is an errs.Conflict.
func (s *Store) CreateTenant(ctx context.Context, t tenant.Tenant) error {
	_, err := s.w(ctx).ExecContext(ctx,
		`INSERT INTO tenants (`+tenantColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		t.ID, t.Name, t.DisplayName, string(t.Status), formatTime(t.CreatedAt), formatTime(t.UpdatedAt), t.Version)
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
	t, err := scanTenant(s.r(ctx).QueryRowContext(ctx, `SELECT `+tenantColumns+` FROM tenants WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
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
	query := `SELECT ` + tenantColumns + ` FROM tenants ORDER BY created_at, id LIMIT ?`
	args := []any{limit}
	if after != nil {
		query = `SELECT ` + tenantColumns + ` FROM tenants WHERE (created_at, id) > (?, ?) ORDER BY created_at, id LIMIT ?`
		args = []any{formatTime(after.CreatedAt), after.ID, limit}
	}
	rows, err := s.r(ctx).QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	defer rows.Close()
	var out []tenant.Tenant
	for rows.Next() {
		t, err := scanTenant(rows)
		if err != nil {
			return nil, fmt.Errorf("list tenants: %w", err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	return out, nil
}

// UpdateTenant writes t's display name, status, updated_at and version where the stored version
// is prevVersion: an errs.NotFound when the tenant is gone, an errs.Conflict wrapping
// tenant.ErrVersionConflict when the version differs.
func (s *Store) UpdateTenant(ctx context.Context, t tenant.Tenant, prevVersion int64) error {
	res, err := s.w(ctx).ExecContext(ctx,
		`UPDATE tenants SET display_name = ?, status = ?, updated_at = ?, version = ? WHERE id = ? AND version = ?`,
		t.DisplayName, string(t.Status), formatTime(t.UpdatedAt), t.Version, t.ID, prevVersion)
	if err != nil {
		return fmt.Errorf("update tenant %s: %w", t.ID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("update tenant %s: %w", t.ID, err)
	}
	if n == 1 {
		return nil
	}
	// Nothing matched: tell a vanished tenant from a changed one.
	exists, err := s.rowExists(ctx, `SELECT 1 FROM tenants WHERE id = ?`, t.ID)
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
	if err := s.r(ctx).QueryRowContext(ctx, `SELECT count(*) FROM agents WHERE tenant_id = ?`, tenantID).Scan(&n); err != nil {
		return 0, fmt.Errorf("count agents of tenant %s: %w", tenantID, err)
	}
	return n, nil
}

// DeleteTenantAgents deletes every agent of the tenant (their capabilities and API keys go with
// them, by foreign key) and returns their IDs in registration order, or nil when there were none.
func (s *Store) DeleteTenantAgents(ctx context.Context, tenantID string) ([]string, error) {
	rows, err := s.w(ctx).QueryContext(ctx, `DELETE FROM agents WHERE tenant_id = ? RETURNING id, created_at`, tenantID)
	if err != nil {
		return nil, fmt.Errorf("delete agents of tenant %s: %w", tenantID, err)
	}
	defer rows.Close()
	type deleted struct{ id, createdAt string }
	var ds []deleted
	for rows.Next() {
		var d deleted
		if err := rows.Scan(&d.id, &d.createdAt); err != nil {
			return nil, fmt.Errorf("delete agents of tenant %s: %w", tenantID, err)
		}
		ds = append(ds, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("delete agents of tenant %s: %w", tenantID, err)
	}
	if err := rows.Close(); err != nil {
		return nil, fmt.Errorf("delete agents of tenant %s: %w", tenantID, err)
	}
	// RETURNING has no order; fixed-width times make text order time order.
	slices.SortFunc(ds, func(a, b deleted) int {
		return cmp.Or(cmp.Compare(a.createdAt, b.createdAt), cmp.Compare(a.id, b.id))
	})
	var ids []string
	for _, d := range ds {
		ids = append(ids, d.id)
	}
	return ids, nil
}

// DeleteTenant deletes the tenant with its API keys (foreign key, ON DELETE CASCADE) and its users,
// or returns an errs.NotFound. While agents reference the tenant the foreign key refuses, and that
// is an errs.Conflict with nothing deleted.
func (s *Store) DeleteTenant(ctx context.Context, id string) error {
	return s.InTx(ctx, func(ctx context.Context) error {
		res, err := s.w(ctx).ExecContext(ctx, `DELETE FROM tenants WHERE id = ?`, id)
		if isForeignKeyViolation(err) {
			return errs.Wrap(errs.Conflict, err, "tenant %s still has agents", id)
		}
		if err != nil {
			return fmt.Errorf("delete tenant %s: %w", id, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return fmt.Errorf("delete tenant %s: %w", id, err)
		}
		if n == 0 {
			return errs.New(errs.NotFound, "tenant %s not found", id)
		}
		if _, err := s.w(ctx).ExecContext(ctx, `DELETE FROM users WHERE tenant_id = ?`, id); err != nil {
			return fmt.Errorf("delete users of tenant %s: %w", id, err)
		}
		return nil
	})
}

// rowScanner is what *sql.Row and *sql.Rows share.
type rowScanner interface{ Scan(dest ...any) error }

func scanTenant(r rowScanner) (tenant.Tenant, error) {
	var (
		t                    tenant.Tenant
		status               string
		createdAt, updatedAt string
	)
	if err := r.Scan(&t.ID, &t.Name, &t.DisplayName, &status, &createdAt, &updatedAt, &t.Version); err != nil {
		return tenant.Tenant{}, err
	}
	t.Status = tenant.Status(status)
	var err error
	if t.CreatedAt, err = parseTime(createdAt); err != nil {
		return tenant.Tenant{}, fmt.Errorf("tenant %s created_at: %w", t.ID, err)
	}
	if t.UpdatedAt, err = parseTime(updatedAt); err != nil {
		return tenant.Tenant{}, fmt.Errorf("tenant %s updated_at: %w", t.ID, err)
	}
	return t, nil
}

// rowExists reports whether query (a SELECT of at most one row) finds a row. It tells apart the
// reasons a compare-and-set write matched nothing; the answer may be stale outside a transaction,
// which only matters for the error code of a write that lost a race either way.
func (s *Store) rowExists(ctx context.Context, query string, args ...any) (bool, error) {
	var one int
	err := s.r(ctx).QueryRowContext(ctx, query, args...).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// isForeignKeyViolation reports a foreign key refusing a write. SQLite reports a missing parent
// as SQLITE_CONSTRAINT_FOREIGNKEY but an ON DELETE RESTRICT refusal through the trigger that
// implements it, as SQLITE_CONSTRAINT_TRIGGER with the same message; the schema has no triggers of
// its own, so the message tells the two apart from nothing else.
func isForeignKeyViolation(err error) bool {
	var e *sqlite.Error
	if !errors.As(err, &e) {
		return false
	}
	switch e.Code() {
	case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
		return true
	case sqlite3.SQLITE_CONSTRAINT_TRIGGER:
		return strings.Contains(e.Error(), "FOREIGN KEY constraint failed")
	}
	return false
}
