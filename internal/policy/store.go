package policy

import "context"

// Store persists policies. Adapters implement it on the transaction bound to ctx, if any, so a
// policy's change commits together with its audit record; no method opens a transaction of its
// own or keeps state between calls. Errors are *errs.Error with the codes named below, or wrapped
// store failures. A TenantID of "" is a global policy (NULL in SQL).
type Store interface {
	Reader
	// CreatePolicy inserts p. An existing ID, or a name taken in p's tenant (or among global
	// policies), is an errs.Conflict; a TenantID naming no tenant is an errs.NotFound.
	CreatePolicy(ctx context.Context, p Policy) error
	// Policy returns the policy with id, of any tenant, or an errs.NotFound.
	Policy(ctx context.Context, id string) (Policy, error)
	// ListPolicies returns at most limit policies of tenantID ("" for the global ones) with an ID
	// greater than after ("" for the first page), in ascending ID order.
	ListPolicies(ctx context.Context, tenantID, after string, limit int) ([]Policy, error)
	// UpdatePolicy writes p's Name, Description, Effect, Expression, Enabled, UpdatedAt and
	// Version where the stored version is prevVersion. It returns an errs.NotFound when the
	// policy is gone, an errs.Conflict wrapping ErrVersionConflict when the version differs, and
	// an errs.Conflict for a name taken in the tenant.
	UpdatePolicy(ctx context.Context, p Policy, prevVersion int64) error
	// DeletePolicy deletes the policy where the stored version is version: an errs.NotFound when
	// it is gone, an errs.Conflict wrapping ErrVersionConflict when the version differs.
	DeletePolicy(ctx context.Context, id string, version int64) error
}

// Reader is what the Engine reads to follow the stored policies of every tenant.
type Reader interface {
	// PolicyGeneration returns a number that changes whenever a policy is created, updated or
	// deleted (a tenant's deletion included), in this or any other replica. It is one cheap
	// read, made on every refresh.
	PolicyGeneration(ctx context.Context) (int64, error)
	// AllPolicies returns every stored policy, of every tenant, in ascending ID order.
	AllPolicies(ctx context.Context) ([]Policy, error)
}
