package invoke

import (
	"context"
	"errors"
	"time"

	"github.com/nops-kernel/nops/internal/events"
)

// Statuses of an async invocation. pending → running → completed | failed; a running
// invocation whose worker's lease ran out (the worker died) is claimed again, and one given back
// (its worker shut down mid-call) is pending again.
const (
	StatusPending   = "pending"   // accepted, waiting for a worker
	StatusRunning   = "running"   // a worker claimed it and is calling an agent
	StatusCompleted = "completed" // an agent answered 1xx–4xx; the answer is stored
	StatusFailed    = "failed"    // the agent answered 5xx, or no agent answered in time
)

// Invocation is an async invocation as the store keeps it: the request, the run's bookkeeping
// and the result. Times are UTC.
type Invocation struct {
	ID         string // "inv_…"
	TenantID   string
	Capability string
	Status     string // one of the Status constants

	// The request: the body and the only headers the agent gets besides the kernel's own.
	RequestBody        []byte
	RequestContentType string // "" when the caller sent none
	RequestID          string // the submitting request's X-Request-ID, "" when none
	IdempotencyKey     string // "" when none; unique per tenant while the invocation is kept

	CreatedAt   time.Time
	StartedAt   time.Time // when the latest run started; zero before the first
	CompletedAt time.Time // zero until completed or failed
	// LeaseUntil is when a worker other than the current one may claim it: for a running
	// invocation the end of its worker's lease (the call's deadline plus a margin), for a pending
	// one when the sweeper runs it if no event delivery did. Zero once completed or failed.
	LeaseUntil time.Time
	// Attempts counts the runs started (claims): 1 normally, more when a worker died or gave the
	// invocation back. It is also the fencing token of a run: only the run holding the current
	// count may complete it.
	Attempts int

	// The result.
	AgentID             string // the agent that answered, "" when none did
	ResponseStatus      int    // the agent's answer's status; 0 when no answer is stored
	ResponseContentType string
	ResponseBody        []byte // at most Config.MaxBufferedOut bytes
	ErrorStatus         int    // failed: the HTTP status of the failure (the agent's 5xx, 502, 503, 504…)
	ErrorDetail         string // failed: what went wrong, for the caller (never internal details)

	// ExpiresAt is when the invocation may be purged: AsyncOptions.ResultTTL after its creation
	// and again after its completion.
	ExpiresAt time.Time
}

// InvocationResult is what CompleteInvocation stores: the outcome of the run whose claim counted
// Attempt.
type InvocationResult struct {
	TenantID            string
	ID                  string
	Attempt             int    // the Attempts of the claim that ran the call
	Status              string // StatusCompleted or StatusFailed
	CompletedAt         time.Time
	AgentID             string
	ResponseStatus      int
	ResponseContentType string
	ResponseBody        []byte
	ErrorStatus         int
	ErrorDetail         string
	ExpiresAt           time.Time
}

// InvocationRef names an invocation (with its capability, whose routing table sets the lease).
type InvocationRef struct{ TenantID, ID, Capability string }

// Errors the store wraps (in an errs.Conflict).
var (
	// ErrNotClaimable: the invocation is completed or failed, or another worker's lease runs.
	ErrNotClaimable = errors.New("invocation is not claimable")
	// ErrClaimLost: the run's claim is no longer the current one (its lease ran out and another
	// worker claimed the invocation, or it is finished).
	ErrClaimLost = errors.New("invocation claim lost")
	// ErrKeyUsed: the tenant has an invocation with this idempotency key.
	ErrKeyUsed = errors.New("idempotency key already used")
)

// AsyncStore is what async invocations need of the storage adapter: the invocations table,
// transactions and the outbox, so that each change and its event commit together. Both
// internal/store/sqlite and internal/store/postgres implement it. Every method joins the
// transaction bound to ctx, if any.
type AsyncStore interface {
	InTx(ctx context.Context, fn func(ctx context.Context) error) error
	events.OutboxWriter

	// CreateInvocation inserts inv (status pending, Attempts 0). A tenant that does not exist is
	// an errs.NotFound; an id taken an errs.Conflict; an IdempotencyKey the tenant already used
	// an errs.Conflict wrapping ErrKeyUsed, without aborting the caller's transaction.
	CreateInvocation(ctx context.Context, inv Invocation) error
	// Invocation returns the tenant's invocation id; another tenant's, or none, is an
	// errs.NotFound.
	Invocation(ctx context.Context, tenantID, id string) (Invocation, error)
	// InvocationByKey returns the tenant's invocation with the idempotency key, or an
	// errs.NotFound.
	InvocationByKey(ctx context.Context, tenantID, key string) (Invocation, error)
	// ClaimInvocation moves the invocation to running for a new run — from pending, or from
	// running when its lease ended at or before now — setting StartedAt to now, LeaseUntil to
	// leaseUntil and adding one to Attempts, in one compare-and-set statement, and returns the
	// claimed row. Of concurrent claims one wins. An invocation that cannot be claimed is an
	// errs.Conflict wrapping ErrNotClaimable, returned with the invocation as it is; a missing
	// one an errs.NotFound.
	ClaimInvocation(ctx context.Context, tenantID, id string, now, leaseUntil time.Time) (Invocation, error)
	// CompleteInvocation stores r on the invocation while it is running under the claim that
	// counted r.Attempt, clearing LeaseUntil; otherwise it changes nothing and is an
	// errs.Conflict wrapping ErrClaimLost (errs.NotFound when the invocation is gone).
	CompleteInvocation(ctx context.Context, r InvocationResult) error
	// ReleaseInvocation gives a running invocation back (pending, LeaseUntil at) while the claim
	// that counted attempt is current; otherwise it is an errs.Conflict wrapping ErrClaimLost.
	ReleaseInvocation(ctx context.Context, tenantID, id string, attempt int, at time.Time) error
	// ReclaimableInvocations returns up to limit pending or running invocations whose LeaseUntil
	// is at or before now, earliest lease first: the work of dead workers and lost deliveries.
	ReclaimableInvocations(ctx context.Context, now time.Time, limit int) ([]InvocationRef, error)
	// PurgeInvocations deletes up to limit completed or failed invocations whose ExpiresAt is at
	// or before now and returns how many it deleted.
	PurgeInvocations(ctx context.Context, now time.Time, limit int) (int64, error)
}
