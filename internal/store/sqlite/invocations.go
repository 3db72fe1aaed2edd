// Async invocations (invoke.AsyncStore), table invocations of migration 00015.
//
// Every change of status is one UPDATE … WHERE <expected state> RETURNING, run under SQLite's
// database write lock, so of two workers racing for one invocation (connections of this process,
// which share the writer connection, or processes on the same file) exactly one matches; the
// other gets no row and reads the invocation to say why. An insert whose idempotency key is taken
// is an ON CONFLICT DO NOTHING, so it does not abort the caller's transaction.

package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/invoke"
)

var _ invoke.AsyncStore = (*Store)(nil)

const invocationColumns = `id, tenant_id, capability, status, request_body, request_content_type, request_id, idempotency_key,
	created_at, started_at, completed_at, lease_until, attempts, agent_id, response_status, response_content_type,
	response_body, error_status, error_detail, expires_at`

// reclaimableQuery lists the sweeper's candidates through the partial index on lease_until
// (TestInvocationsQueryPlans).
const reclaimableQuery = `SELECT tenant_id, id, capability FROM invocations
	WHERE lease_until IS NOT NULL AND lease_until <= ? ORDER BY lease_until LIMIT ?`

// purgeInvocationsQuery deletes expired finished invocations through the index on expires_at.
const purgeInvocationsQuery = `DELETE FROM invocations WHERE id IN (
	SELECT id FROM invocations WHERE expires_at <= ? AND status IN ('completed', 'failed') LIMIT ?)`

// CreateInvocation inserts inv: an errs.NotFound when its tenant does not exist, an
// errs.Conflict when its id is taken, an errs.Conflict wrapping invoke.ErrKeyUsed when the
// tenant already has its idempotency key.
func (s *Store) CreateInvocation(ctx context.Context, inv invoke.Invocation) error {
	body := inv.RequestBody
	if body == nil {
		body = []byte{}
	}
	var key sql.NullString
	if inv.IdempotencyKey != "" {
		key = sql.NullString{String: inv.IdempotencyKey, Valid: true}
	}
	res, err := s.w(ctx).ExecContext(ctx, `INSERT INTO invocations (`+invocationColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING`,
		inv.ID, inv.TenantID, inv.Capability, inv.Status, body, inv.RequestContentType, inv.RequestID, key,
		formatTime(inv.CreatedAt), nullTimeText(inv.StartedAt), nullTimeText(inv.CompletedAt), nullTimeText(inv.LeaseUntil),
		inv.Attempts, inv.AgentID, inv.ResponseStatus, inv.ResponseContentType, nullBytes(inv.ResponseBody),
		inv.ErrorStatus, inv.ErrorDetail, formatTime(inv.ExpiresAt))
	switch {
	case isForeignKeyViolation(err):
		return errs.Wrap(errs.NotFound, err, "tenant %s not found", inv.TenantID)
	case isUniqueViolation(err):
		return errs.Wrap(errs.Conflict, err, "invocation %s already exists", inv.ID)
	case err != nil:
		return fmt.Errorf("create invocation %s: %w", inv.ID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("create invocation %s: %w", inv.ID, err)
	}
	if n == 0 {
		return errs.Wrap(errs.Conflict, invoke.ErrKeyUsed, "tenant %s already has an invocation with this idempotency key", inv.TenantID)
	}
	return nil
}

// Invocation returns the tenant's invocation id, or an errs.NotFound.
func (s *Store) Invocation(ctx context.Context, tenantID, id string) (invoke.Invocation, error) {
	inv, err := scanInvocation(s.r(ctx).QueryRowContext(ctx, `SELECT `+invocationColumns+` FROM invocations WHERE id = ? AND tenant_id = ?`, id, tenantID))
	if errors.Is(err, sql.ErrNoRows) {
		return invoke.Invocation{}, errs.New(errs.NotFound, "invocation %s not found", id)
	}
	if err != nil {
		return invoke.Invocation{}, fmt.Errorf("get invocation %s: %w", id, err)
	}
	return inv, nil
}

// InvocationByKey returns the tenant's invocation with the idempotency key, or an errs.NotFound.
func (s *Store) InvocationByKey(ctx context.Context, tenantID, key string) (invoke.Invocation, error) {
	inv, err := scanInvocation(s.r(ctx).QueryRowContext(ctx,
		`SELECT `+invocationColumns+` FROM invocations WHERE tenant_id = ? AND idempotency_key = ?`, tenantID, key))
	if errors.Is(err, sql.ErrNoRows) {
		return invoke.Invocation{}, errs.New(errs.NotFound, "no invocation of tenant %s has this idempotency key", tenantID)
	}
	if err != nil {
		return invoke.Invocation{}, fmt.Errorf("get invocation by idempotency key: %w", err)
	}
	return inv, nil
}

// ClaimInvocation moves a pending invocation, or a running one whose lease ended, to running
// for a new run and returns it; see invoke.AsyncStore.
func (s *Store) ClaimInvocation(ctx context.Context, tenantID, id string, now, leaseUntil time.Time) (invoke.Invocation, error) {
	at := formatTime(now)
	inv, err := scanInvocation(s.w(ctx).QueryRowContext(ctx, `UPDATE invocations
		SET status = 'running', started_at = ?, lease_until = ?, attempts = attempts + 1
		WHERE id = ? AND tenant_id = ? AND (status = 'pending' OR (status = 'running' AND lease_until <= ?))
		RETURNING `+invocationColumns,
		at, formatTime(leaseUntil), id, tenantID, at))
	if err == nil {
		return inv, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return invoke.Invocation{}, fmt.Errorf("claim invocation %s: %w", id, err)
	}
	cur, err := s.Invocation(ctx, tenantID, id)
	if err != nil {
		return invoke.Invocation{}, err
	}
	return cur, errs.Wrap(errs.Conflict, invoke.ErrNotClaimable, "invocation %s is %s", id, cur.Status)
}

// CompleteInvocation stores r while the claim that counted r.Attempt is current.
func (s *Store) CompleteInvocation(ctx context.Context, r invoke.InvocationResult) error {
	if r.Status != invoke.StatusCompleted && r.Status != invoke.StatusFailed {
		return errs.Field("status", "must be completed or failed")
	}
	res, err := s.w(ctx).ExecContext(ctx, `UPDATE invocations
		SET status = ?, completed_at = ?, lease_until = NULL, agent_id = ?, response_status = ?, response_content_type = ?,
		    response_body = ?, error_status = ?, error_detail = ?, expires_at = ?
		WHERE id = ? AND tenant_id = ? AND status = 'running' AND attempts = ?`,
		r.Status, formatTime(r.CompletedAt), r.AgentID, r.ResponseStatus, r.ResponseContentType, nullBytes(r.ResponseBody),
		r.ErrorStatus, r.ErrorDetail, formatTime(r.ExpiresAt), r.ID, r.TenantID, r.Attempt)
	if err != nil {
		return fmt.Errorf("complete invocation %s: %w", r.ID, err)
	}
	return s.claimHeld(ctx, res, r.TenantID, r.ID, r.Attempt)
}

// ReleaseInvocation gives a running invocation back (pending, reclaimable from at) while the
// claim that counted attempt is current.
func (s *Store) ReleaseInvocation(ctx context.Context, tenantID, id string, attempt int, at time.Time) error {
	res, err := s.w(ctx).ExecContext(ctx, `UPDATE invocations SET status = 'pending', lease_until = ?
		WHERE id = ? AND tenant_id = ? AND status = 'running' AND attempts = ?`, formatTime(at), id, tenantID, attempt)
	if err != nil {
		return fmt.Errorf("release invocation %s: %w", id, err)
	}
	return s.claimHeld(ctx, res, tenantID, id, attempt)
}

// claimHeld turns the result of a write conditioned on a run's claim into nil, an errs.NotFound
// or an errs.Conflict wrapping invoke.ErrClaimLost.
func (s *Store) claimHeld(ctx context.Context, res sql.Result, tenantID, id string, attempt int) error {
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("write invocation %s: %w", id, err)
	}
	if n == 1 {
		return nil
	}
	cur, err := s.Invocation(ctx, tenantID, id)
	if err != nil {
		return err
	}
	return errs.Wrap(errs.Conflict, invoke.ErrClaimLost, "invocation %s is %s at attempt %d, not running at attempt %d", id, cur.Status, cur.Attempts, attempt)
}

// ReclaimableInvocations returns up to limit invocations whose lease_until is at or before now.
func (s *Store) ReclaimableInvocations(ctx context.Context, now time.Time, limit int) ([]invoke.InvocationRef, error) {
	rows, err := s.r(ctx).QueryContext(ctx, reclaimableQuery, formatTime(now), limit)
	if err != nil {
		return nil, fmt.Errorf("list reclaimable invocations: %w", err)
	}
	defer rows.Close()
	var out []invoke.InvocationRef
	for rows.Next() {
		var r invoke.InvocationRef
		if err := rows.Scan(&r.TenantID, &r.ID, &r.Capability); err != nil {
			return nil, fmt.Errorf("list reclaimable invocations: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list reclaimable invocations: %w", err)
	}
	return out, nil
}

// PurgeInvocations deletes up to limit finished invocations whose expires_at is at or before now.
func (s *Store) PurgeInvocations(ctx context.Context, now time.Time, limit int) (int64, error) {
	res, err := s.w(ctx).ExecContext(ctx, purgeInvocationsQuery, formatTime(now), limit)
	if err != nil {
		return 0, fmt.Errorf("purge invocations: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("purge invocations: %w", err)
	}
	return n, nil
}

func scanInvocation(row rowScanner) (invoke.Invocation, error) {
	var (
		inv                                invoke.Invocation
		key                                sql.NullString
		createdAt, expiresAt               string
		startedAt, completedAt, leaseUntil sql.NullString
		respBody                           []byte
	)
	if err := row.Scan(&inv.ID, &inv.TenantID, &inv.Capability, &inv.Status, &inv.RequestBody, &inv.RequestContentType,
		&inv.RequestID, &key, &createdAt, &startedAt, &completedAt, &leaseUntil, &inv.Attempts, &inv.AgentID,
		&inv.ResponseStatus, &inv.ResponseContentType, &respBody, &inv.ErrorStatus, &inv.ErrorDetail, &expiresAt); err != nil {
		return invoke.Invocation{}, err
	}
	inv.IdempotencyKey = key.String
	inv.ResponseBody = respBody
	var err error
	if inv.CreatedAt, err = parseTime(createdAt); err != nil {
		return invoke.Invocation{}, fmt.Errorf("invocation %s created_at: %w", inv.ID, err)
	}
	if inv.ExpiresAt, err = parseTime(expiresAt); err != nil {
		return invoke.Invocation{}, fmt.Errorf("invocation %s expires_at: %w", inv.ID, err)
	}
	for _, f := range []struct {
		name string
		src  sql.NullString
		dst  *time.Time
	}{
		{"started_at", startedAt, &inv.StartedAt},
		{"completed_at", completedAt, &inv.CompletedAt},
		{"lease_until", leaseUntil, &inv.LeaseUntil},
	} {
		if !f.src.Valid {
			continue
		}
		if *f.dst, err = parseTime(f.src.String); err != nil {
			return invoke.Invocation{}, fmt.Errorf("invocation %s %s: %w", inv.ID, f.name, err)
		}
	}
	return inv, nil
}
