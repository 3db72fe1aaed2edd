// ABAC policies (policy.Store), tables policies and policy_generation of migration 00012.
//
// A global policy (TenantID "") is stored with a NULL tenant_id, so that the foreign key to
// tenants holds for the others; queries select a tenant by coalesce(tenant_id, ''), the
// expression the indexes are on. Writes are compare-and-set on version; the triggers of the
// migration bump the generation.

package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/policy"
)

var _ policy.Store = (*Store)(nil)

const policyColumns = `id, tenant_id, name, description, effect, expression, enabled, created_at, updated_at, version`

// listPoliciesQuery pages one tenant's policies, or the global ones, through the index
// policies_tenant (TestPoliciesListPlan).
const listPoliciesQuery = `SELECT ` + policyColumns + ` FROM policies WHERE coalesce(tenant_id, '') = ? AND id > ? ORDER BY id LIMIT ?`

// CreatePolicy inserts p. A taken ID or name is an errs.Conflict; an unknown tenant an
// errs.NotFound.
func (s *Store) CreatePolicy(ctx context.Context, p policy.Policy) error {
	_, err := s.w(ctx).ExecContext(ctx,
		`INSERT INTO policies (`+policyColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		p.ID, nullString(p.TenantID), p.Name, p.Description, string(p.Effect), p.Expression, p.Enabled,
		formatTime(p.CreatedAt), formatTime(p.UpdatedAt), p.Version)
	switch {
	case isUniqueViolation(err):
		return errs.Wrap(errs.Conflict, err, "policy %s or its name %q already exists", p.ID, p.Name)
	case isForeignKeyViolation(err):
		return errs.Wrap(errs.NotFound, err, "tenant %s not found", p.TenantID)
	case err != nil:
		return fmt.Errorf("create policy %s: %w", p.ID, err)
	}
	return nil
}

// Policy returns the policy with id, of any tenant, or an errs.NotFound.
func (s *Store) Policy(ctx context.Context, id string) (policy.Policy, error) {
	p, err := scanPolicy(s.r(ctx).QueryRowContext(ctx, `SELECT `+policyColumns+` FROM policies WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return policy.Policy{}, errs.New(errs.NotFound, "policy %s not found", id)
	}
	if err != nil {
		return policy.Policy{}, fmt.Errorf("get policy %s: %w", id, err)
	}
	return p, nil
}

// ListPolicies returns at most limit policies of the tenant ("" for the global ones) with an ID
// greater than after, in ascending ID order, or nil.
func (s *Store) ListPolicies(ctx context.Context, tenantID, after string, limit int) ([]policy.Policy, error) {
	return s.queryPolicies(ctx, fmt.Sprintf("list policies of tenant %q", tenantID),
		listPoliciesQuery,
		tenantID, after, limit)
}

// AllPolicies returns every policy in ascending ID order, or nil.
func (s *Store) AllPolicies(ctx context.Context) ([]policy.Policy, error) {
	return s.queryPolicies(ctx, "list all policies", `SELECT `+policyColumns+` FROM policies ORDER BY id`)
}

// PolicyGeneration returns the counter the triggers bump on every change to policies.
func (s *Store) PolicyGeneration(ctx context.Context) (int64, error) {
	var gen int64
	if err := s.r(ctx).QueryRowContext(ctx, `SELECT generation FROM policy_generation WHERE id = 1`).Scan(&gen); err != nil {
		return 0, fmt.Errorf("read policy generation: %w", err)
	}
	return gen, nil
}

// UpdatePolicy writes p's mutable fields where the stored version is prevVersion: an
// errs.NotFound when the policy is gone, an errs.Conflict wrapping policy.ErrVersionConflict when
// the version differs, an errs.Conflict for a taken name.
func (s *Store) UpdatePolicy(ctx context.Context, p policy.Policy, prevVersion int64) error {
	res, err := s.w(ctx).ExecContext(ctx,
		`UPDATE policies SET name = ?, description = ?, effect = ?, expression = ?, enabled = ?, updated_at = ?, version = ?
		 WHERE id = ? AND version = ?`,
		p.Name, p.Description, string(p.Effect), p.Expression, p.Enabled, formatTime(p.UpdatedAt), p.Version, p.ID, prevVersion)
	if isUniqueViolation(err) {
		return errs.Wrap(errs.Conflict, err, "a policy named %q already exists", p.Name)
	}
	if err != nil {
		return fmt.Errorf("update policy %s: %w", p.ID, err)
	}
	return s.policyWritten(ctx, res, p.ID, prevVersion)
}

// DeletePolicy deletes the policy where the stored version is version: an errs.NotFound when it
// is gone, an errs.Conflict wrapping policy.ErrVersionConflict when the version differs.
func (s *Store) DeletePolicy(ctx context.Context, id string, version int64) error {
	res, err := s.w(ctx).ExecContext(ctx, `DELETE FROM policies WHERE id = ? AND version = ?`, id, version)
	if err != nil {
		return fmt.Errorf("delete policy %s: %w", id, err)
	}
	return s.policyWritten(ctx, res, id, version)
}

// policyWritten turns the result of a compare-and-set write on one policy into nil, an
// errs.NotFound or an errs.Conflict wrapping policy.ErrVersionConflict.
func (s *Store) policyWritten(ctx context.Context, res sql.Result, id string, version int64) error {
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("write policy %s: %w", id, err)
	}
	if n == 1 {
		return nil
	}
	exists, err := s.rowExists(ctx, `SELECT 1 FROM policies WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("write policy %s: %w", id, err)
	}
	if !exists {
		return errs.New(errs.NotFound, "policy %s not found", id)
	}
	return errs.Wrap(errs.Conflict, policy.ErrVersionConflict, "policy %s changed since version %d", id, version)
}

func (s *Store) queryPolicies(ctx context.Context, what, query string, args ...any) ([]policy.Policy, error) {
	rows, err := s.r(ctx).QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer rows.Close()
	var out []policy.Policy
	for rows.Next() {
		p, err := scanPolicy(rows)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}

func scanPolicy(r rowScanner) (policy.Policy, error) {
	var (
		p                    policy.Policy
		tenantID             sql.NullString
		effect               string
		createdAt, updatedAt string
	)
	err := r.Scan(&p.ID, &tenantID, &p.Name, &p.Description, &effect, &p.Expression, &p.Enabled, &createdAt, &updatedAt, &p.Version)
	if err != nil {
		return policy.Policy{}, err
	}
	p.TenantID, p.Effect = tenantID.String, policy.Effect(effect)
	if p.CreatedAt, err = parseTime(createdAt); err != nil {
		return policy.Policy{}, fmt.Errorf("policy %s created_at: %w", p.ID, err)
	}
	if p.UpdatedAt, err = parseTime(updatedAt); err != nil {
		return policy.Policy{}, fmt.Errorf("policy %s updated_at: %w", p.ID, err)
	}
	return p, nil
}
