// ABAC policies (policy.Store), tables policies and policy_generation of migration 00012.
//
// A global policy (TenantID "") is stored with a NULL tenant_id, so that the foreign key to
// tenants holds for the others; queries select a tenant by coalesce(tenant_id, ''), the
// expression the indexes are on. Writes are compare-and-set on version; the trigger of the
// migration bumps the generation.

package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/policy"
)

var _ policy.Store = (*Store)(nil)

const policyColumns = `id, tenant_id, name, description, effect, expression, enabled, created_at, updated_at, version`

// listPoliciesQuery pages one tenant's policies, or the global ones, through the index
// policies_tenant (TestPoliciesListPlan).
const listPoliciesQuery = `SELECT ` + policyColumns + ` FROM policies WHERE coalesce(tenant_id, '') = $1 AND id > $2 ORDER BY id LIMIT $3`

// CreatePolicy inserts p. A taken ID or name is an errs.Conflict; an unknown tenant an
// errs.NotFound.
func (s *Store) CreatePolicy(ctx context.Context, p policy.Policy) error {
	_, err := s.q(ctx).Exec(ctx,
		`INSERT INTO policies (`+policyColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
		p.ID, nullString(p.TenantID), p.Name, p.Description, string(p.Effect), p.Expression, p.Enabled,
		p.CreatedAt, p.UpdatedAt, p.Version)
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
	p, err := scanPolicy(s.q(ctx).QueryRow(ctx, `SELECT `+policyColumns+` FROM policies WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
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

// PolicyGeneration returns the counter the trigger bumps on every change to policies.
func (s *Store) PolicyGeneration(ctx context.Context) (int64, error) {
	var gen int64
	if err := s.q(ctx).QueryRow(ctx, `SELECT generation FROM policy_generation WHERE id = 1`).Scan(&gen); err != nil {
		return 0, fmt.Errorf("read policy generation: %w", err)
	}
	return gen, nil
}

// UpdatePolicy writes p's mutable fields where the stored version is prevVersion: an
// errs.NotFound when the policy is gone, an errs.Conflict wrapping policy.ErrVersionConflict when
// the version differs, an errs.Conflict for a taken name.
func (s *Store) UpdatePolicy(ctx context.Context, p policy.Policy, prevVersion int64) error {
	tag, err := s.q(ctx).Exec(ctx,
		`UPDATE policies SET name = $1, description = $2, effect = $3, expression = $4, enabled = $5, updated_at = $6, version = $7
		 WHERE id = $8 AND version = $9`,
		p.Name, p.Description, string(p.Effect), p.Expression, p.Enabled, p.UpdatedAt, p.Version, p.ID, prevVersion)
	if isUniqueViolation(err) {
		return errs.Wrap(errs.Conflict, err, "a policy named %q already exists", p.Name)
	}
	if err != nil {
		return fmt.Errorf("update policy %s: %w", p.ID, err)
	}
	return s.policyWritten(ctx, tag, p.ID, prevVersion)
}

// DeletePolicy deletes the policy where the stored version is version: an errs.NotFound when it
// is gone, an errs.Conflict wrapping policy.ErrVersionConflict when the version differs.
func (s *Store) DeletePolicy(ctx context.Context, id string, version int64) error {
	tag, err := s.q(ctx).Exec(ctx, `DELETE FROM policies WHERE id = $1 AND version = $2`, id, version)
	if err != nil {
		return fmt.Errorf("delete policy %s: %w", id, err)
	}
	return s.policyWritten(ctx, tag, id, version)
}

// policyWritten turns the result of a compare-and-set write on one policy into nil, an
// errs.NotFound or an errs.Conflict wrapping policy.ErrVersionConflict.
func (s *Store) policyWritten(ctx context.Context, tag pgconn.CommandTag, id string, version int64) error {
	if tag.RowsAffected() == 1 {
		return nil
	}
	exists, err := s.rowExists(ctx, `SELECT 1 FROM policies WHERE id = $1`, id)
	if err != nil {
		return fmt.Errorf("write policy %s: %w", id, err)
	}
	if !exists {
		return errs.New(errs.NotFound, "policy %s not found", id)
	}
	return errs.Wrap(errs.Conflict, policy.ErrVersionConflict, "policy %s changed since version %d", id, version)
}

func (s *Store) queryPolicies(ctx context.Context, what, query string, args ...any) ([]policy.Policy, error) {
	rows, err := s.q(ctx).Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	ps, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (policy.Policy, error) { return scanPolicy(row) })
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if len(ps) == 0 {
		return nil, nil
	}
	return ps, nil
}

func scanPolicy(row pgx.Row) (policy.Policy, error) {
	var (
		p        policy.Policy
		tenantID *string
		effect   string
	)
	if err := row.Scan(&p.ID, &tenantID, &p.Name, &p.Description, &effect, &p.Expression, &p.Enabled, &p.CreatedAt, &p.UpdatedAt, &p.Version); err != nil {
		return policy.Policy{}, err
	}
	if tenantID != nil {
		p.TenantID = *tenantID
	}
	p.Effect = policy.Effect(effect)
	p.CreatedAt, p.UpdatedAt = p.CreatedAt.UTC(), p.UpdatedAt.UTC()
	return p, nil
}
