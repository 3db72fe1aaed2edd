// Async invocations (invoke.AsyncStore), table invocations of migration 00015.
//
// Every change of status is one UPDATE … WHERE <expected state> RETURNING. Under READ COMMITTED
// a second worker's UPDATE of the same row waits for the first's transaction and then re-checks
// its WHERE against the committed row, so of two workers racing for one invocation exactly one
// matches; the other gets no row and reads the invocation to say why. An insert whose
// idempotency key is taken is an ON CONFLICT DO NOTHING, because a unique violation would abort
// the caller's transaction.

package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

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
	WHERE lease_until IS NOT NULL AND lease_until <= $1 ORDER BY lease_until LIMIT $2`

// purgeInvocationsQuery deletes expired finished invocations through the index on expires_at.
const purgeInvocationsQuery = `DELETE FROM invocations WHERE id IN (
	SELECT id FROM invocations WHERE expires_at <= $1 AND status IN ('completed', 'failed') LIMIT $2)`

// CreateInvocation inserts inv: an errs.NotFound when its tenant does not exist, an
// errs.Conflict when its id is taken, an errs.Conflict wrapping invoke.ErrKeyUsed when the
// tenant already has its idempotency key.
func (s *Store) CreateInvocation(ctx context.Context, inv invoke.Invocation) error {
	body := inv.RequestBody
	if body == nil {
		body = []byte{}
	}
	var key *string
	if inv.IdempotencyKey != "" {
		key = &inv.IdempotencyKey
	}
	tag, err := s.q(ctx).Exec(ctx, `INSERT INTO invocations (`+invocationColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)
		ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING`,
		inv.ID, inv.TenantID, inv.Capability, inv.Status, body, inv.RequestContentType, inv.RequestID, key,
		inv.CreatedAt, nullTime(inv.StartedAt), nullTime(inv.CompletedAt), nullTime(inv.LeaseUntil),
		inv.Attempts, inv.AgentID, inv.ResponseStatus, inv.ResponseContentType, nullBytes(inv.ResponseBody),
		inv.ErrorStatus, inv.ErrorDetail, inv.ExpiresAt)
	switch {
	case isForeignKeyViolation(err):
		return errs.Wrap(errs.NotFound, err, "tenant %s not found", inv.TenantID)
	case isUniqueViolation(err):
		return errs.Wrap(errs.Conflict, err, "invocation %s already exists", inv.ID)
	case err != nil:
		return fmt.Errorf("create invocation %s: %w", inv.ID, err)
	case tag.RowsAffected() == 0:
		return errs.Wrap(errs.Conflict, invoke.ErrKeyUsed, "tenant %s already has an invocation with this idempotency key", inv.TenantID)
	}
	return nil
}

// Invocation returns the tenant's invocation id, or an errs.NotFound.
func (s *Store) Invocation(ctx context.Context, tenantID, id string) (invoke.Invocation, error) {
	inv, err := scanInvocation(s.q(ctx).QueryRow(ctx, `SELECT `+invocationColumns+` FROM invocations WHERE id = $1 AND tenant_id = $2`, id, tenantID))
	if errors.Is(err, pgx.ErrNoRows) {
		return invoke.Invocation{}, errs.New(errs.NotFound, "invocation %s not found", id)
	}
	if err != nil {
		return invoke.Invocation{}, fmt.Errorf("get invocation %s: %w", id, err)
	}
	return inv, nil
}

// InvocationByKey returns the tenant's invocation with the idempotency key, or an errs.NotFound.
func (s *Store) InvocationByKey(ctx context.Context, tenantID, key string) (invoke.Invocation, error) {
	inv, err := scanInvocation(s.q(ctx).QueryRow(ctx,
		`SELECT `+invocationColumns+` FROM invocations WHERE tenant_id = $1 AND idempotency_key = $2`, tenantID, key))
	if errors.Is(err, pgx.ErrNoRows) {
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
	inv, err := scanInvocation(s.q(ctx).QueryRow(ctx, `UPDATE invocations
		SET status = 'running', started_at = $1, lease_until = $2, attempts = attempts + 1
		WHERE id = $3 AND tenant_id = $4 AND (status = 'pending' OR (status = 'running' AND lease_until <= $1))
		RETURNING `+invocationColumns,
		now, leaseUntil, id, tenantID))
	if err == nil {
		return inv, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
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
	tag, err := s.q(ctx).Exec(ctx, `UPDATE invocations
		SET status = $1, completed_at = $2, lease_until = NULL, agent_id = $3, response_status = $4, response_content_type = $5,
		    response_body = $6, error_status = $7, error_detail = $8, expires_at = $9
		WHERE id = $10 AND tenant_id = $11 AND status = 'running' AND attempts = $12`,
		r.Status, r.CompletedAt, r.AgentID, r.ResponseStatus, r.ResponseContentType, nullBytes(r.ResponseBody),
		r.ErrorStatus, r.ErrorDetail, r.ExpiresAt, r.ID, r.TenantID, r.Attempt)
	if err != nil {
		return fmt.Errorf("complete invocation %s: %w", r.ID, err)
	}
	return s.claimHeld(ctx, tag.RowsAffected(), r.TenantID, r.ID, r.Attempt)
}

// ReleaseInvocation gives a running invocation back (pending, reclaimable from at) while the
// claim that counted attempt is current.
func (s *Store) ReleaseInvocation(ctx context.Context, tenantID, id string, attempt int, at time.Time) error {
	tag, err := s.q(ctx).Exec(ctx, `UPDATE invocations SET status = 'pending', lease_until = $1
		WHERE id = $2 AND tenant_id = $3 AND status = 'running' AND attempts = $4`, at, id, tenantID, attempt)
	if err != nil {
		return fmt.Errorf("release invocation %s: %w", id, err)
	}
	return s.claimHeld(ctx, tag.RowsAffected(), tenantID, id, attempt)
}

// claimHeld turns the row count of a write conditioned on a run's claim into nil, an
// errs.NotFound or an errs.Conflict wrapping invoke.ErrClaimLost.
func (s *Store) claimHeld(ctx context.Context, n int64, tenantID, id string, attempt int) error {
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
	rows, err := s.q(ctx).Query(ctx, reclaimableQuery, now, limit)
	if err != nil {
		return nil, fmt.Errorf("list reclaimable invocations: %w", err)
	}
	refs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (invoke.InvocationRef, error) {
		var r invoke.InvocationRef
		err := row.Scan(&r.TenantID, &r.ID, &r.Capability)
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("list reclaimable invocations: %w", err)
	}
	if len(refs) == 0 {
		return nil, nil
	}
	return refs, nil
}

// PurgeInvocations deletes up to limit finished invocations whose expires_at is at or before now.
func (s *Store) PurgeInvocations(ctx context.Context, now time.Time, limit int) (int64, error) {
	tag, err := s.q(ctx).Exec(ctx, purgeInvocationsQuery, now, limit)
	if err != nil {
		return 0, fmt.Errorf("purge invocations: %w", err)
	}
	return tag.RowsAffected(), nil
}

func scanInvocation(row pgx.Row) (invoke.Invocation, error) {
	var (
		inv                                invoke.Invocation
		key                                *string
		startedAt, completedAt, leaseUntil *time.Time
		attempts, respStatus, errStatus    int32
	)
	if err := row.Scan(&inv.ID, &inv.TenantID, &inv.Capability, &inv.Status, &inv.RequestBody, &inv.RequestContentType,
		&inv.RequestID, &key, &inv.CreatedAt, &startedAt, &completedAt, &leaseUntil, &attempts, &inv.AgentID,
		&respStatus, &inv.ResponseContentType, &inv.ResponseBody, &errStatus, &inv.ErrorDetail, &inv.ExpiresAt); err != nil {
		return invoke.Invocation{}, err
	}
	if key != nil {
		inv.IdempotencyKey = *key
	}
	inv.Attempts, inv.ResponseStatus, inv.ErrorStatus = int(attempts), int(respStatus), int(errStatus)
	inv.CreatedAt, inv.ExpiresAt = inv.CreatedAt.UTC(), inv.ExpiresAt.UTC()
	inv.StartedAt, inv.CompletedAt, inv.LeaseUntil = timeOrZero(startedAt), timeOrZero(completedAt), timeOrZero(leaseUntil)
	return inv, nil
}
