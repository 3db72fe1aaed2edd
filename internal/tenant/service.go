package tenant

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
)

// Page sizes of List.
const (
	DefaultLimit = 50
	MaxLimit     = 500
)

// casAttempts bounds how often a status change re-reads a tenant after losing a compare-and-set
// race; losing three in a row means heavy contention on one tenant, reported as errs.Conflict.
const casAttempts = 3

// ErrVersionConflict is what Store.UpdateTenant wraps (inside an errs.Conflict) when the stored
// version is not the one the caller read: someone else changed the tenant in between.
var ErrVersionConflict = errors.New("tenant version changed")

// Store persists tenants. Every method works inside whatever transaction the adapter bound to
// ctx; none opens its own, so the caller can commit a change together with its audit record and
// outbox event. Times passed in are UTC with microsecond precision and must round-trip exactly.
type Store interface {
	// CreateTenant inserts t. A taken name (or ID) is an errs.Conflict.
	CreateTenant(ctx context.Context, t Tenant) error
	// TenantByID returns the tenant, or an errs.NotFound.
	TenantByID(ctx context.Context, id string) (Tenant, error)
	// ListTenants returns up to limit tenants ordered by (CreatedAt, ID), starting strictly after
	// after when it is not nil.
	ListTenants(ctx context.Context, after *Cursor, limit int) ([]Tenant, error)
	// UpdateTenant writes t's DisplayName, Status, UpdatedAt and Version where the stored version
	// is prevVersion. It returns an errs.NotFound when the tenant is gone and an errs.Conflict
	// wrapping ErrVersionConflict when the stored version differs.
	UpdateTenant(ctx context.Context, t Tenant, prevVersion int64) error
	// CountAgents returns how many agents the tenant has.
	CountAgents(ctx context.Context, tenantID string) (int64, error)
	// DeleteTenantAgents deletes every agent of the tenant and returns their IDs.
	DeleteTenantAgents(ctx context.Context, tenantID string) ([]string, error)
	// DeleteTenant deletes the tenant, or returns an errs.NotFound. It must fail with an
	// errs.Conflict while agents still reference the tenant (a foreign key with ON DELETE
	// RESTRICT does it), so the agents rule holds even when an agent is registered between
	// CountAgents and DeleteTenant. What else the tenant owns (API keys, users) is the
	// adapter's to remove with it.
	DeleteTenant(ctx context.Context, id string) error
}

// Config configures a Service. The zero value works.
type Config struct {
	Now func() time.Time // the clock; nil means time.Now
	// CacheTTL is how long Cached may serve a tenant from memory: 0 means DefaultCacheTTL, a
	// negative value turns the cache off (Cached reads the store), at most MaxCacheTTL.
	CacheTTL  time.Duration
	CacheSize int // tenants cached at most; 0: DefaultCacheSize
}

// Service applies the tenant rules over a Store. Create it with NewService.
type Service struct {
	store Store
	now   func() time.Time
	cache *tenantCache // nil: off
}

// Transition is the outcome of Suspend or Resume. Changed is false when the tenant already had
// the requested status; then Before equals After and nothing was written.
type Transition struct {
	Before  Tenant
	After   Tenant
	Changed bool
}

// Deletion is the outcome of Delete: the tenant as it was, and the IDs of the agents deleted with
// it (empty unless cascade was asked for).
type Deletion struct {
	Tenant          Tenant
	DeletedAgentIDs []string
}

// Page is one page of List. NextCursor is empty on the last page.
type Page struct {
	Tenants    []Tenant
	NextCursor string
}

// NewService returns a Service over store.
func NewService(store Store, cfg Config) (*Service, error) {
	if store == nil {
		return nil, errors.New("new tenant service: nil store")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.CacheTTL == 0 {
		cfg.CacheTTL = DefaultCacheTTL
	}
	switch {
	case cfg.CacheTTL > MaxCacheTTL:
		return nil, fmt.Errorf("new tenant service: cache ttl %s above %s", cfg.CacheTTL, MaxCacheTTL)
	case cfg.CacheSize < 0:
		return nil, fmt.Errorf("new tenant service: negative cache size %d", cfg.CacheSize)
	case cfg.CacheSize == 0:
		cfg.CacheSize = DefaultCacheSize
	}
	s := &Service{store: store, now: cfg.Now}
	if cfg.CacheTTL > 0 {
		s.cache = &tenantCache{ttl: cfg.CacheTTL, size: cfg.CacheSize, entries: map[string]cachedTenant{}, bypass: map[string]time.Time{}}
	}
	return s, nil
}

// clock returns now in UTC truncated to microseconds: PostgreSQL keeps no more, and a time that
// does not round-trip would break cursors and compare-and-set.
func (s *Service) clock() time.Time { return s.now().UTC().Truncate(time.Microsecond) }

// Create validates in and stores a new active tenant. A taken name is an errs.Conflict.
func (s *Service) Create(ctx context.Context, in CreateInput) (Tenant, error) {
	if err := in.Validate(); err != nil {
		return Tenant{}, err
	}
	now := s.clock()
	t := Tenant{
		ID:          newID(),
		Name:        in.Name,
		DisplayName: in.DisplayName,
		Status:      StatusActive,
		CreatedAt:   now,
		UpdatedAt:   now,
		Version:     1,
	}
	if err := s.store.CreateTenant(ctx, t); err != nil {
		if errs.Is(err, errs.Conflict) {
			return Tenant{}, errs.Wrap(errs.Conflict, err, "a tenant named %q already exists", in.Name)
		}
		return Tenant{}, fmt.Errorf("create tenant %s: %w", in.Name, err)
	}
	return t, nil
}

// Get returns the tenant with id, or an errs.NotFound.
func (s *Service) Get(ctx context.Context, id string) (Tenant, error) {
	if !ValidID(id) {
		return Tenant{}, notFound()
	}
	t, err := s.store.TenantByID(ctx, id)
	if err != nil {
		return Tenant{}, fmt.Errorf("get tenant %s: %w", id, err)
	}
	return t, nil
}

// List returns one page of tenants in creation order. cursor is "" for the first page or a
// Page.NextCursor; limit 0 means DefaultLimit. A bad cursor is an errs.Field("query.cursor"), a
// limit outside 0..MaxLimit an errs.Field("query.limit").
func (s *Service) List(ctx context.Context, cursor string, limit int) (Page, error) {
	if limit < 0 || limit > MaxLimit {
		return Page{}, errs.Field("query.limit", fmt.Sprintf("must be between 1 and %d", MaxLimit))
	}
	if limit == 0 {
		limit = DefaultLimit
	}
	var after *Cursor
	if cursor != "" {
		c, err := DecodeCursor(cursor)
		if err != nil {
			return Page{}, err
		}
		after = &c
	}
	// One more than asked tells whether another page follows without a second query.
	ts, err := s.store.ListTenants(ctx, after, limit+1)
	if err != nil {
		return Page{}, fmt.Errorf("list tenants: %w", err)
	}
	p := Page{Tenants: ts}
	if len(ts) > limit {
		p.Tenants = ts[:limit]
		p.NextCursor = EncodeCursor(CursorOf(ts[limit-1]))
	}
	return p, nil
}

// Suspend suspends the tenant. Suspending a suspended tenant succeeds with Changed == false.
func (s *Service) Suspend(ctx context.Context, id string) (Transition, error) {
	return s.setStatus(ctx, id, StatusSuspended)
}

// Resume makes a suspended tenant active again. Resuming an active tenant succeeds with
// Changed == false.
func (s *Service) Resume(ctx context.Context, id string) (Transition, error) {
	return s.setStatus(ctx, id, StatusActive)
}

func (s *Service) setStatus(ctx context.Context, id string, to Status) (Transition, error) {
	if !ValidID(id) {
		return Transition{}, notFound()
	}
	var lastErr error
	for range casAttempts {
		before, err := s.store.TenantByID(ctx, id)
		if err != nil {
			return Transition{}, fmt.Errorf("set tenant %s %s: %w", id, to, err)
		}
		if before.Status == to {
			return Transition{Before: before, After: before}, nil
		}
		after := before
		after.Status = to
		after.UpdatedAt = s.clock()
		after.Version = before.Version + 1
		err = s.store.UpdateTenant(ctx, after, before.Version)
		if err == nil {
			s.forget(id, after.UpdatedAt)
			return Transition{Before: before, After: after, Changed: true}, nil
		}
		if !errors.Is(err, ErrVersionConflict) {
			return Transition{}, fmt.Errorf("set tenant %s %s: %w", id, to, err)
		}
		lastErr = err
	}
	return Transition{}, errs.Wrap(errs.Conflict, lastErr, "tenant %s is being changed concurrently; retry", id)
}

// Delete deletes the tenant. While it has agents the deletion is refused with an errs.Conflict
// unless cascade is true; then its agents are deleted first and their IDs returned in the
// Deletion.
func (s *Service) Delete(ctx context.Context, id string, cascade bool) (Deletion, error) {
	if !ValidID(id) {
		return Deletion{}, notFound()
	}
	t, err := s.store.TenantByID(ctx, id)
	if err != nil {
		return Deletion{}, fmt.Errorf("delete tenant %s: %w", id, err)
	}
	d := Deletion{Tenant: t}
	if cascade {
		d.DeletedAgentIDs, err = s.store.DeleteTenantAgents(ctx, id)
		if err != nil {
			return Deletion{}, fmt.Errorf("delete agents of tenant %s: %w", id, err)
		}
	} else {
		n, err := s.store.CountAgents(ctx, id)
		if err != nil {
			return Deletion{}, fmt.Errorf("count agents of tenant %s: %w", id, err)
		}
		if n > 0 {
			return Deletion{}, errs.New(errs.Conflict,
				"tenant %s still has %d agent(s); delete them first or ask for cascade", id, n)
		}
	}
	if err := s.store.DeleteTenant(ctx, id); err != nil {
		if errs.Is(err, errs.Conflict) {
			return Deletion{}, errs.Wrap(errs.Conflict, err, "tenant %s gained agents while being deleted; retry", id)
		}
		return Deletion{}, fmt.Errorf("delete tenant %s: %w", id, err)
	}
	if s.cache != nil {
		s.forget(id, s.now())
	}
	return d, nil
}

// notFound does not echo id: it may be any string a client put in a URL.
func notFound() error { return errs.New(errs.NotFound, "tenant not found") }
