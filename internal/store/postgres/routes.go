// Routing tables (routing.Store), table routes of migration 00014.
//
// targets is a jsonb array of routing.Target in matching order. A create is an insert ON CONFLICT
// DO NOTHING: a unique violation would abort the caller's transaction, while a route that exists
// is a lost race the caller may retry inside it. Other writes are compare-and-set on revision.

package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/routing"
)

var _ routing.Store = (*Store)(nil)

const routeColumns = `tenant_id, capability, targets, sticky_header, timeout_ms, retryable, hedge_delay_ms, hedge_max_extra, created_at, updated_at, revision`

// listRoutesQuery pages one tenant's routes through the primary key (TestRoutesListPlan).
const listRoutesQuery = `SELECT ` + routeColumns + ` FROM routes WHERE tenant_id = $1 AND capability > $2 ORDER BY capability LIMIT $3`

// Route returns the tenant's route of capability, or an errs.NotFound.
func (s *Store) Route(ctx context.Context, tenantID, capability string) (routing.Route, error) {
	r, err := scanRoute(s.q(ctx).QueryRow(ctx, `SELECT `+routeColumns+` FROM routes WHERE tenant_id = $1 AND capability = $2`, tenantID, capability))
	if errors.Is(err, pgx.ErrNoRows) {
		return routing.Route{}, errs.New(errs.NotFound, "route %s of tenant %s not found", capability, tenantID)
	}
	if err != nil {
		return routing.Route{}, fmt.Errorf("get route %s of tenant %s: %w", capability, tenantID, err)
	}
	return r, nil
}

// CreateRoute inserts r: an errs.Conflict wrapping routing.ErrRevisionConflict when the route
// exists, an errs.NotFound when the tenant does not.
func (s *Store) CreateRoute(ctx context.Context, r routing.Route) error {
	targets, err := json.Marshal(r.Targets)
	if err != nil {
		return fmt.Errorf("create route %s: encode targets: %w", r.Capability, err)
	}
	delay, extra := hedgeColumns(r.Hedge)
	tag, err := s.q(ctx).Exec(ctx,
		`INSERT INTO routes (`+routeColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (tenant_id, capability) DO NOTHING`,
		r.TenantID, r.Capability, string(targets), r.StickyHeader, r.TimeoutMs, r.Retryable, delay, extra,
		r.CreatedAt, r.UpdatedAt, r.Revision)
	switch {
	case isForeignKeyViolation(err):
		return errs.Wrap(errs.NotFound, err, "tenant %s not found", r.TenantID)
	case err != nil:
		return fmt.Errorf("create route %s: %w", r.Capability, err)
	case tag.RowsAffected() == 0:
		return errs.Wrap(errs.Conflict, routing.ErrRevisionConflict, "route %s of tenant %s already exists", r.Capability, r.TenantID)
	}
	return nil
}

// ListRoutes returns at most limit routes of the tenant with a capability greater than after, in
// ascending byte order of capability, or nil.
func (s *Store) ListRoutes(ctx context.Context, tenantID, after string, limit int) ([]routing.Route, error) {
	what := fmt.Sprintf("list routes of tenant %s", tenantID)
	rows, err := s.q(ctx).Query(ctx, listRoutesQuery, tenantID, after, limit)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	rs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (routing.Route, error) { return scanRoute(row) })
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if len(rs) == 0 {
		return nil, nil
	}
	return rs, nil
}

// UpdateRoute writes r's mutable fields where the stored revision is prevRevision: an
// errs.NotFound when the route is gone, an errs.Conflict wrapping routing.ErrRevisionConflict when
// the revision differs.
func (s *Store) UpdateRoute(ctx context.Context, r routing.Route, prevRevision int64) error {
	targets, err := json.Marshal(r.Targets)
	if err != nil {
		return fmt.Errorf("update route %s: encode targets: %w", r.Capability, err)
	}
	delay, extra := hedgeColumns(r.Hedge)
	tag, err := s.q(ctx).Exec(ctx,
		`UPDATE routes SET targets = $1, sticky_header = $2, timeout_ms = $3, retryable = $4, hedge_delay_ms = $5, hedge_max_extra = $6,
		 updated_at = $7, revision = $8 WHERE tenant_id = $9 AND capability = $10 AND revision = $11`,
		string(targets), r.StickyHeader, r.TimeoutMs, r.Retryable, delay, extra, r.UpdatedAt, r.Revision,
		r.TenantID, r.Capability, prevRevision)
	if err != nil {
		return fmt.Errorf("update route %s: %w", r.Capability, err)
	}
	return s.routeWritten(ctx, tag, r.TenantID, r.Capability, prevRevision)
}

// DeleteRoute deletes the route where the stored revision is revision: an errs.NotFound when it
// is gone, an errs.Conflict wrapping routing.ErrRevisionConflict when the revision differs.
func (s *Store) DeleteRoute(ctx context.Context, tenantID, capability string, revision int64) error {
	tag, err := s.q(ctx).Exec(ctx, `DELETE FROM routes WHERE tenant_id = $1 AND capability = $2 AND revision = $3`, tenantID, capability, revision)
	if err != nil {
		return fmt.Errorf("delete route %s: %w", capability, err)
	}
	return s.routeWritten(ctx, tag, tenantID, capability, revision)
}

// routeWritten turns the result of a compare-and-set write on one route into nil, an
// errs.NotFound or an errs.Conflict wrapping routing.ErrRevisionConflict.
func (s *Store) routeWritten(ctx context.Context, tag pgconn.CommandTag, tenantID, capability string, revision int64) error {
	if tag.RowsAffected() == 1 {
		return nil
	}
	exists, err := s.rowExists(ctx, `SELECT 1 FROM routes WHERE tenant_id = $1 AND capability = $2`, tenantID, capability)
	if err != nil {
		return fmt.Errorf("write route %s: %w", capability, err)
	}
	if !exists {
		return errs.New(errs.NotFound, "route %s of tenant %s not found", capability, tenantID)
	}
	return errs.Wrap(errs.Conflict, routing.ErrRevisionConflict, "route %s changed since revision %d", capability, revision)
}

// hedgeColumns returns the hedge's columns, both NULL without one.
func hedgeColumns(h *routing.Hedge) (delay, extra *int32) {
	if h == nil {
		return nil, nil
	}
	d, e := int32(h.DelayMs), int32(h.MaxExtra)
	return &d, &e
}

func scanRoute(row pgx.Row) (routing.Route, error) {
	var (
		r            routing.Route
		targets      []byte
		timeout      int32
		delay, extra *int32
	)
	if err := row.Scan(&r.TenantID, &r.Capability, &targets, &r.StickyHeader, &timeout, &r.Retryable, &delay, &extra,
		&r.CreatedAt, &r.UpdatedAt, &r.Revision); err != nil {
		return routing.Route{}, err
	}
	if err := json.Unmarshal(targets, &r.Targets); err != nil {
		return routing.Route{}, fmt.Errorf("route %s targets: %w", r.Capability, err)
	}
	r.TimeoutMs = int(timeout)
	if delay != nil && extra != nil {
		r.Hedge = &routing.Hedge{DelayMs: int(*delay), MaxExtra: int(*extra)}
	}
	r.CreatedAt, r.UpdatedAt = r.CreatedAt.UTC(), r.UpdatedAt.UTC()
	return r, nil
}
