package routing

import "context"

// Reader is what Cache reads: one route by its key.
type Reader interface {
	// Route returns the tenant's route of capability, or an errs.NotFound.
	Route(ctx context.Context, tenantID, capability string) (Route, error)
}

// Store persists routes. Adapters implement it on the transaction bound to ctx, if any, so a
// route's change commits together with its audit record and event; no method opens a transaction
// of its own or keeps state between calls, and none fails in a way that ends the caller's
// transaction when another writer won a race (a create that finds the route is an ordinary
// conflict). Errors are *errs.Error with the codes named below, or wrapped store failures.
type Store interface {
	Reader
	// CreateRoute inserts r. An existing route of the key is an errs.Conflict wrapping
	// ErrRevisionConflict; a TenantID naming no tenant is an errs.NotFound.
	CreateRoute(ctx context.Context, r Route) error
	// ListRoutes returns at most limit routes of the tenant with a capability greater than after
	// ("" for the first page), in ascending byte order of capability.
	ListRoutes(ctx context.Context, tenantID, after string, limit int) ([]Route, error)
	// UpdateRoute writes r's Targets, StickyHeader, TimeoutMs, Retryable, Hedge, UpdatedAt and
	// Revision where the stored revision is prevRevision: an errs.NotFound when the route is gone,
	// an errs.Conflict wrapping ErrRevisionConflict when the revision differs.
	UpdateRoute(ctx context.Context, r Route, prevRevision int64) error
	// DeleteRoute deletes the route where the stored revision is revision: an errs.NotFound when
	// it is gone, an errs.Conflict wrapping ErrRevisionConflict when the revision differs.
	DeleteRoute(ctx context.Context, tenantID, capability string, revision int64) error
}
