package routing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/pagecursor"
	"github.com/nops-kernel/nops/internal/registry"
	"github.com/nops-kernel/nops/internal/tenant"
)

// Page sizes of List.
const (
	DefaultListLimit = 50
	MaxListLimit     = 100
)

// writeAttempts bounds how often an unconditional Put or Delete re-reads a route that changed
// between its read and its compare-and-set write.
const writeAttempts = 3

// ServiceOptions are a Service's optional settings; the zero value works.
type ServiceOptions struct {
	Cache  *Cache           // nil: Invalidate does nothing
	Now    func() time.Time // nil: time.Now
	Logger *slog.Logger     // nil: discard
}

// Service manages routes: validation, tenant scoping, optimistic concurrency. internal/control
// calls Put and Delete inside the transaction of the audit record and the event, and Invalidate
// after the commit. Safe for concurrent use; it holds no mutable state.
type Service struct {
	store Store
	cache *Cache
	now   func() time.Time
	log   *slog.Logger
}

// NewService returns a Service over store.
func NewService(store Store, opts ServiceOptions) (*Service, error) {
	if store == nil {
		return nil, errors.New("new routing service: nil store")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Service{store: store, cache: opts.Cache, now: opts.Now, log: opts.Logger}, nil
}

// Cache returns the cache the service invalidates, nil if none: the invoke path reads through it.
func (s *Service) Cache() *Cache { return s.cache }

// Invalidate makes this replica's cache read the route again on its next Get. Call it after a
// committed change; other replicas follow within the cache's TTL.
func (s *Service) Invalidate(tenantID, capability string) {
	if s.cache != nil {
		s.cache.Invalidate(tenantID, capability)
	}
}

// clock returns now in UTC at the microsecond, the precision both SQL stores keep.
func (s *Service) clock() time.Time { return s.now().UTC().Truncate(time.Microsecond) }

// notFound does not echo the capability: it may be any string a client put in a URL.
func notFound() error { return errs.New(errs.NotFound, "route not found") }

// checkTenant refuses a missing or malformed tenant: the caller must name one (the principal's,
// or the one a SUPER_ADMIN chose).
func checkTenant(id string) error {
	if !tenant.ValidID(id) {
		return errs.New(errs.Invalid, "a valid tenant is required")
	}
	return nil
}

// Get returns the tenant's route of capability, or an errs.NotFound (also for a string that
// cannot be a capability name).
func (s *Service) Get(ctx context.Context, tenantID, capability string) (Route, error) {
	if err := checkTenant(tenantID); err != nil {
		return Route{}, err
	}
	if !registry.ValidCapabilityName(capability) {
		return Route{}, notFound()
	}
	r, found, err := s.read(ctx, tenantID, capability)
	if err != nil {
		return Route{}, err
	}
	if !found {
		return Route{}, notFound()
	}
	return r, nil
}

// read returns the stored route, found false when there is none. A row of another key (an adapter
// bug) counts as none, so it cannot leak across tenants.
func (s *Service) read(ctx context.Context, tenantID, capability string) (Route, bool, error) {
	r, err := s.store.Route(ctx, tenantID, capability)
	switch {
	case errs.Is(err, errs.NotFound):
		return Route{}, false, nil
	case err != nil:
		return Route{}, false, fmt.Errorf("get route %s: %w", capability, err)
	case r.TenantID != tenantID || r.Capability != capability:
		return Route{}, false, nil
	}
	return r, true, nil
}

// ListInput selects a page of a tenant's routes. Cursor is the NextCursor of the previous page;
// Limit is 1..MaxListLimit (0: DefaultListLimit).
type ListInput struct {
	Cursor string
	Limit  int
}

// Page is one page of routes in ascending capability order. NextCursor is "" on the last.
type Page struct {
	Routes     []Route
	NextCursor string
}

// List returns a page of the tenant's routes.
func (s *Service) List(ctx context.Context, tenantID string, in ListInput) (Page, error) {
	if err := checkTenant(tenantID); err != nil {
		return Page{}, err
	}
	// The cursor is the last capability of the previous page: it names a position in a list the
	// caller may read anyway, so it needs no signature.
	if in.Cursor != "" && !registry.ValidCapabilityName(in.Cursor) {
		return Page{}, errs.Field("query.cursor", "not a cursor returned by this API")
	}
	limit, err := pagecursor.Limit(in.Limit, DefaultListLimit, MaxListLimit)
	if err != nil {
		return Page{}, err
	}
	// One more than asked tells whether a next page exists without a second query.
	rs, err := s.store.ListRoutes(ctx, tenantID, in.Cursor, limit+1)
	if err != nil {
		return Page{}, fmt.Errorf("list routes of %s: %w", tenantID, err)
	}
	var page Page
	for _, r := range rs {
		if r.TenantID == tenantID { // an adapter bug must not leak another tenant's route
			page.Routes = append(page.Routes, r)
		}
	}
	page.Routes, page.NextCursor = pagecursor.Trim(page.Routes, limit, func(r Route) string { return r.Capability })
	return page, nil
}

// Change is the outcome of Put. Before is nil when the route was created. Changed is false when
// the spec equalled the stored route; then nothing was written.
type Change struct {
	Before  *Route
	After   Route
	Created bool
	Changed bool
}

// Put creates or replaces the tenant's route of capability with spec. pre's conditions, when set,
// must hold (else errs.PreconditionFailed). Without them, a write that lost a race with another
// writer re-reads and tries again, so the last writer wins.
func (s *Service) Put(ctx context.Context, tenantID, capability string, pre Preconditions, spec Spec) (Change, error) {
	if err := checkTenant(tenantID); err != nil {
		return Change{}, err
	}
	if !registry.ValidCapabilityName(capability) {
		return Change{}, errs.Field("path.capability", "must be a capability name: dot-separated segments of lowercase letters, digits, '-' and '_'")
	}
	norm, err := spec.Normalize()
	if err != nil {
		return Change{}, err
	}
	conditional := pre != (Preconditions{})
	var lastErr error
	for range writeAttempts {
		cur, found, err := s.read(ctx, tenantID, capability)
		if err != nil {
			return Change{}, err
		}
		var before *Route
		if found {
			before = &cur
		}
		if err := pre.Check(before); err != nil {
			return Change{}, err
		}
		if found && cur.Spec().equal(norm) {
			return Change{Before: before, After: cur}, nil
		}
		now := s.clock()
		var after Route
		if found {
			after = cur.with(norm)
			after.Revision, after.UpdatedAt = cur.Revision+1, now
			err = s.store.UpdateRoute(ctx, after, cur.Revision)
		} else {
			after = Route{TenantID: tenantID, Capability: capability, Revision: 1, CreatedAt: now, UpdatedAt: now}.with(norm)
			err = s.store.CreateRoute(ctx, after)
		}
		switch {
		case err == nil:
			s.log.InfoContext(ctx, "route written", "tenant", tenantID, "capability", capability, "revision", after.Revision, "created", !found)
			return Change{Before: before, After: after, Created: !found, Changed: true}, nil
		case !found && errs.Is(err, errs.NotFound):
			return Change{}, errs.Wrap(errs.NotFound, err, "tenant not found")
		case !errors.Is(err, ErrRevisionConflict) && !(found && errs.Is(err, errs.NotFound)):
			return Change{}, fmt.Errorf("put route %s: %w", capability, err)
		case conditional:
			// The route changed (or went) between the check and the write: the condition, checked
			// again now, would not hold.
			return Change{}, errs.Wrap(errs.PreconditionFailed, err, "the route was changed since it was read; get it again and retry")
		}
		lastErr = errs.Wrap(errs.Conflict, err, "the route kept changing while it was being written; retry")
	}
	return Change{}, lastErr
}

// Delete deletes the tenant's route of capability and returns it as it was. ifMatch is optional;
// when given it must match. Without it, a change landing between the read and the delete is
// retried, so the returned route is exactly what was deleted.
func (s *Service) Delete(ctx context.Context, tenantID, capability, ifMatch string) (Route, error) {
	if err := checkTenant(tenantID); err != nil {
		return Route{}, err
	}
	if !registry.ValidCapabilityName(capability) {
		return Route{}, notFound()
	}
	pre := Preconditions{IfMatch: ifMatch}
	var lastErr error
	for range writeAttempts {
		cur, found, err := s.read(ctx, tenantID, capability)
		if err != nil {
			return Route{}, err
		}
		if !found {
			return Route{}, notFound()
		}
		if err := pre.Check(&cur); err != nil {
			return Route{}, err
		}
		err = s.store.DeleteRoute(ctx, tenantID, capability, cur.Revision)
		switch {
		case err == nil:
			s.log.InfoContext(ctx, "route deleted", "tenant", tenantID, "capability", capability)
			return cur, nil
		case errs.Is(err, errs.NotFound):
			return Route{}, notFound()
		case !errors.Is(err, ErrRevisionConflict):
			return Route{}, fmt.Errorf("delete route %s: %w", capability, err)
		case ifMatch != "":
			return Route{}, errs.Wrap(errs.PreconditionFailed, err, "the route was changed since it was read; get it again and retry")
		}
		lastErr = errs.Wrap(errs.Conflict, err, "the route kept changing while it was being deleted; retry")
	}
	return Route{}, lastErr
}
