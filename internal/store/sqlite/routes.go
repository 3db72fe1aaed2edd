// Routing tables (routing.Store), table routes of migration 00014.
//
// targets is the JSON array of routing.Target in matching order. A create is an insert ON
// CONFLICT DO NOTHING, so a route that exists is a lost race the caller may retry inside its
// transaction, not an error; other writes are compare-and-set on revision.

package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/routing"
)

var _ routing.Store = (*Store)(nil)

const routeColumns = `tenant_id, capability, targets, sticky_header, timeout_ms, retryable, hedge_delay_ms, hedge_max_extra, created_at, updated_at, revision`

// listRoutesQuery pages one tenant's routes through the primary key (TestRoutesListPlan).
const listRoutesQuery = `SELECT ` + routeColumns + ` FROM routes WHERE tenant_id = ? AND capability > ? ORDER BY capability LIMIT ?`

// Route returns the tenant's route of capability, or an errs.NotFound.
func (s *Store) Route(ctx context.Context, tenantID, capability string) (routing.Route, error) {
	r, err := scanRoute(s.r(ctx).QueryRowContext(ctx, `SELECT `+routeColumns+` FROM routes WHERE tenant_id = ? AND capability = ?`, tenantID, capability))
	if errors.Is(err, sql.ErrNoRows) {
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
	res, err := s.w(ctx).ExecContext(ctx,
		`INSERT INTO routes (`+routeColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, capability) DO NOTHING`,
		r.TenantID, r.Capability, string(targets), r.StickyHeader, r.TimeoutMs, r.Retryable, delay, extra,
		formatTime(r.CreatedAt), formatTime(r.UpdatedAt), r.Revision)
	switch {
	case isForeignKeyViolation(err):
		return errs.Wrap(errs.NotFound, err, "tenant %s not found", r.TenantID)
	case err != nil:
		return fmt.Errorf("create route %s: %w", r.Capability, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("create route %s: %w", r.Capability, err)
	}
	if n == 0 {
		return errs.Wrap(errs.Conflict, routing.ErrRevisionConflict, "route %s of tenant %s already exists", r.Capability, r.TenantID)
	}
	return nil
}

// ListRoutes returns at most limit routes of the tenant with a capability greater than after, in
// ascending byte order of capability, or nil.
func (s *Store) ListRoutes(ctx context.Context, tenantID, after string, limit int) ([]routing.Route, error) {
	what := fmt.Sprintf("list routes of tenant %s", tenantID)
	rows, err := s.r(ctx).QueryContext(ctx, listRoutesQuery, tenantID, after, limit)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer rows.Close()
	var out []routing.Route
	for rows.Next() {
		r, err := scanRoute(rows)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
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
	res, err := s.w(ctx).ExecContext(ctx,
		`UPDATE routes SET targets = ?, sticky_header = ?, timeout_ms = ?, retryable = ?, hedge_delay_ms = ?, hedge_max_extra = ?,
		 updated_at = ?, revision = ? WHERE tenant_id = ? AND capability = ? AND revision = ?`,
		string(targets), r.StickyHeader, r.TimeoutMs, r.Retryable, delay, extra, formatTime(r.UpdatedAt), r.Revision,
		r.TenantID, r.Capability, prevRevision)
	if err != nil {
		return fmt.Errorf("update route %s: %w", r.Capability, err)
	}
	return s.routeWritten(ctx, res, r.TenantID, r.Capability, prevRevision)
}

// DeleteRoute deletes the route where the stored revision is revision: an errs.NotFound when it
// is gone, an errs.Conflict wrapping routing.ErrRevisionConflict when the revision differs.
func (s *Store) DeleteRoute(ctx context.Context, tenantID, capability string, revision int64) error {
	res, err := s.w(ctx).ExecContext(ctx, `DELETE FROM routes WHERE tenant_id = ? AND capability = ? AND revision = ?`, tenantID, capability, revision)
	if err != nil {
		return fmt.Errorf("delete route %s: %w", capability, err)
	}
	return s.routeWritten(ctx, res, tenantID, capability, revision)
}

// routeWritten turns the result of a compare-and-set write on one route into nil, an
// errs.NotFound or an errs.Conflict wrapping routing.ErrRevisionConflict.
func (s *Store) routeWritten(ctx context.Context, res sql.Result, tenantID, capability string, revision int64) error {
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("write route %s: %w", capability, err)
	}
	if n == 1 {
		return nil
	}
	exists, err := s.rowExists(ctx, `SELECT 1 FROM routes WHERE tenant_id = ? AND capability = ?`, tenantID, capability)
	if err != nil {
		return fmt.Errorf("write route %s: %w", capability, err)
	}
	if !exists {
		return errs.New(errs.NotFound, "route %s of tenant %s not found", capability, tenantID)
	}
	return errs.Wrap(errs.Conflict, routing.ErrRevisionConflict, "route %s changed since revision %d", capability, revision)
}

// hedgeColumns returns the hedge's columns, both NULL without one.
func hedgeColumns(h *routing.Hedge) (delay, extra sql.NullInt64) {
	if h == nil {
		return
	}
	return sql.NullInt64{Int64: int64(h.DelayMs), Valid: true}, sql.NullInt64{Int64: int64(h.MaxExtra), Valid: true}
}

func scanRoute(row rowScanner) (routing.Route, error) {
	var (
		r                    routing.Route
		targets              string
		delay, extra         sql.NullInt64
		createdAt, updatedAt string
	)
	if err := row.Scan(&r.TenantID, &r.Capability, &targets, &r.StickyHeader, &r.TimeoutMs, &r.Retryable, &delay, &extra,
		&createdAt, &updatedAt, &r.Revision); err != nil {
		return routing.Route{}, err
	}
	if err := json.Unmarshal([]byte(targets), &r.Targets); err != nil {
		return routing.Route{}, fmt.Errorf("route %s targets: %w", r.Capability, err)
	}
	if delay.Valid && extra.Valid {
		r.Hedge = &routing.Hedge{DelayMs: int(delay.Int64), MaxExtra: int(extra.Int64)}
	}
	var err error
	if r.CreatedAt, err = parseTime(createdAt); err != nil {
		return routing.Route{}, fmt.Errorf("route %s created_at: %w", r.Capability, err)
	}
	if r.UpdatedAt, err = parseTime(updatedAt); err != nil {
		return routing.Route{}, fmt.Errorf("route %s updated_at: %w", r.Capability, err)
	}
	return r, nil
}
