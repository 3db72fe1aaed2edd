package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/pagecursor"
	"github.com/nops-kernel/nops/internal/principal"
	"github.com/nops-kernel/nops/internal/tenant"
)

// Page sizes of List.
const (
	DefaultListLimit = 50
	MaxListLimit     = 100
)

// deleteAttempts bounds how often an unconditional Delete re-reads a policy that changed between
// its read and its compare-and-set delete.
const deleteAttempts = 3

// ServiceOptions are a Service's optional settings; the zero value works.
type ServiceOptions struct {
	Now    func() time.Time // nil: time.Now
	Logger *slog.Logger     // nil: discard
}

// Service manages stored policies: validation (an expression is compiled by the engine that
// will evaluate it), tenant scoping, optimistic concurrency. Create it with NewService.
// internal/control calls its mutating methods inside the transaction of the audit record, and
// Refresh after the commit.
//
// Concurrency: safe for concurrent use; it holds no mutable state.
type Service struct {
	store  Store
	engine *Engine
	now    func() time.Time
	log    *slog.Logger
}

// NewService returns a Service over store, validating expressions with engine (which should
// read the same store).
func NewService(store Store, engine *Engine, opts ServiceOptions) (*Service, error) {
	if store == nil || engine == nil {
		return nil, errors.New("new policy service: nil store or engine")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Service{store: store, engine: engine, now: opts.Now, log: opts.Logger}, nil
}

// clock returns now in UTC at the microsecond, the precision both SQL stores keep.
func (s *Service) clock() time.Time { return s.now().UTC().Truncate(time.Microsecond) }

// Engine returns the engine the service validates with.
func (s *Service) Engine() *Engine { return s.engine }

// Refresh makes this replica's engine see the stored policies now (call it after a committed
// change; other replicas follow within their refresh interval). A failure is logged, not
// returned: the change is committed, and the next periodic refresh retries.
func (s *Service) Refresh(ctx context.Context) {
	if err := s.engine.Refresh(ctx); err != nil {
		s.log.WarnContext(ctx, "policy refresh after a change failed; the periodic refresh will retry", "error", err)
	}
}

// CreateInput is a new policy. TenantID is for a principal above tenants: "" makes a global
// policy, a tenant ID a policy of that tenant. A tenant principal's policies are always its own
// tenant's (TenantID must be "" or that tenant).
type CreateInput struct {
	TenantID string
	Spec
}

// caller returns the principal acting, which every method needs.
func caller(ctx context.Context) (principal.Principal, error) {
	p, ok := principal.FromContext(ctx)
	if !ok || p.Subject == "" {
		return principal.Principal{}, errs.New(errs.Unauthenticated, "authentication required")
	}
	return p, nil
}

func notFound() error { return errs.New(errs.NotFound, "policy not found") }

// scope resolves the tenant a caller acts on: a tenant principal's own (naming another is "not
// found", so a tenant cannot probe another), or for a principal above tenants the one named, ""
// meaning the global policies.
func scope(p principal.Principal, named, field string) (string, error) {
	switch {
	case p.Tenant != "" && named != "" && named != p.Tenant:
		return "", errs.New(errs.NotFound, "tenant not found")
	case p.Tenant != "":
		return p.Tenant, nil
	case named != "" && !tenant.ValidID(named):
		return "", errs.Field(field, "must be a tenant ID")
	}
	return named, nil
}

// validate checks spec, its expression included (errs.Field("body.expression", <compiler
// messages>)).
func (s *Service) validate(spec Spec) error {
	if err := spec.validate("body."); err != nil {
		return err
	}
	if err := s.engine.Compile(spec.Expression); err != nil {
		var ce *CompileError
		if errors.As(err, &ce) {
			return errs.Field("body.expression", ce.Error())
		}
		return fmt.Errorf("compile policy expression: %w", err)
	}
	return nil
}

// Create stores a new policy, enabled unless in says otherwise.
func (s *Service) Create(ctx context.Context, in CreateInput) (Policy, error) {
	p, err := caller(ctx)
	if err != nil {
		return Policy{}, err
	}
	tenantID, err := scope(p, in.TenantID, "body.tenant")
	if err != nil {
		return Policy{}, err
	}
	if err := s.validate(in.Spec); err != nil {
		return Policy{}, err
	}
	now := s.clock()
	pol := Policy{
		ID: newID(), TenantID: tenantID, Name: in.Name, Description: in.Description, Effect: in.Effect,
		Expression: in.Expression, Enabled: in.enabled(), CreatedAt: now, UpdatedAt: now, Version: 1,
	}
	if err := s.store.CreatePolicy(ctx, pol); err != nil {
		if errs.Is(err, errs.Conflict) {
			return Policy{}, errs.Wrap(errs.Conflict, err, "a policy named %q already exists", pol.Name)
		}
		if errs.Is(err, errs.NotFound) {
			return Policy{}, errs.Wrap(errs.NotFound, err, "tenant not found")
		}
		return Policy{}, fmt.Errorf("create policy %s: %w", pol.ID, err)
	}
	s.log.InfoContext(ctx, "policy created", "policy", pol.ID, "tenant", pol.TenantID, "effect", string(pol.Effect), "by", p.Subject)
	return pol, nil
}

// Get returns the policy with id if the caller may see it: a tenant principal sees its tenant's
// policies only, a principal above tenants every policy. Any other is errs.NotFound.
func (s *Service) Get(ctx context.Context, id string) (Policy, error) {
	p, err := caller(ctx)
	if err != nil {
		return Policy{}, err
	}
	return s.get(ctx, p, id)
}

func (s *Service) get(ctx context.Context, p principal.Principal, id string) (Policy, error) {
	if !ValidID(id) {
		return Policy{}, notFound()
	}
	pol, err := s.store.Policy(ctx, id)
	switch {
	case errs.Is(err, errs.NotFound):
		return Policy{}, notFound()
	case err != nil:
		return Policy{}, fmt.Errorf("get policy %s: %w", id, err)
	case p.Tenant != "" && pol.TenantID != p.Tenant:
		// Another tenant's policy, or a global one, does not exist for this caller.
		return Policy{}, notFound()
	}
	return pol, nil
}

// ListInput selects a page of policies. TenantID is as in CreateInput ("" from a principal above
// tenants lists the global policies); Cursor is the NextCursor of the previous page; Limit is
// 1..MaxListLimit (0: DefaultListLimit).
type ListInput struct {
	TenantID string
	Cursor   string
	Limit    int
}

// Page is one page of policies in ascending ID (creation) order. NextCursor is "" on the last.
type Page struct {
	Policies   []Policy
	NextCursor string
}

// List returns a page of the policies of the caller's tenant (or of the tenant, or the global
// policies, a principal above tenants names).
func (s *Service) List(ctx context.Context, in ListInput) (Page, error) {
	p, err := caller(ctx)
	if err != nil {
		return Page{}, err
	}
	tenantID, err := scope(p, in.TenantID, "query.tenant")
	if err != nil {
		return Page{}, err
	}
	if in.Cursor != "" && !ValidID(in.Cursor) {
		return Page{}, errs.Field("query.cursor", "not a cursor returned by this API")
	}
	limit, err := pagecursor.Limit(in.Limit, DefaultListLimit, MaxListLimit)
	if err != nil {
		return Page{}, err
	}
	// One more than asked tells whether a next page exists without a second query.
	ps, err := s.store.ListPolicies(ctx, tenantID, in.Cursor, limit+1)
	if err != nil {
		return Page{}, fmt.Errorf("list policies of %q: %w", tenantID, err)
	}
	var page Page
	for _, pol := range ps {
		if pol.TenantID == tenantID { // an adapter bug must not leak another tenant's policy
			page.Policies = append(page.Policies, pol)
		}
	}
	page.Policies, page.NextCursor = pagecursor.Trim(page.Policies, limit, func(p Policy) string { return p.ID })
	return page, nil
}

// Change is the outcome of Update: the policy before and after. Changed is false when the input
// equalled the stored policy; then nothing was written.
type Change struct {
	Before, After Policy
	Changed       bool
}

// Update replaces the policy's name, description, effect, expression and enabled setting with
// spec. ifMatch is the request's If-Match value and is required (see CheckIfMatch). A policy
// stays in its tenant.
func (s *Service) Update(ctx context.Context, id, ifMatch string, spec Spec) (Change, error) {
	p, err := caller(ctx)
	if err != nil {
		return Change{}, err
	}
	cur, err := s.get(ctx, p, id)
	if err != nil {
		return Change{}, err
	}
	if err := CheckIfMatch(ifMatch, cur); err != nil {
		return Change{}, err
	}
	if err := s.validate(spec); err != nil {
		return Change{}, err
	}
	after := cur
	after.Name, after.Description, after.Effect = spec.Name, spec.Description, spec.Effect
	after.Expression, after.Enabled = spec.Expression, spec.enabled()
	if after == cur {
		return Change{Before: cur, After: cur}, nil
	}
	after.UpdatedAt = s.clock()
	after.Version = cur.Version + 1
	if err := s.store.UpdatePolicy(ctx, after, cur.Version); err != nil {
		switch {
		case errors.Is(err, ErrVersionConflict):
			return Change{}, errs.Wrap(errs.PreconditionFailed, err, "the policy was changed since it was read; get it again and retry")
		case errs.Is(err, errs.Conflict):
			return Change{}, errs.Wrap(errs.Conflict, err, "a policy named %q already exists", after.Name)
		case errs.Is(err, errs.NotFound):
			return Change{}, notFound()
		}
		return Change{}, fmt.Errorf("update policy %s: %w", id, err)
	}
	s.log.InfoContext(ctx, "policy updated", "policy", id, "tenant", after.TenantID, "version", after.Version, "by", p.Subject)
	return Change{Before: cur, After: after, Changed: true}, nil
}

// Delete deletes the policy and returns it as it was. ifMatch is optional; when given it must
// match. Without it, a change landing between the read and the delete is retried.
func (s *Service) Delete(ctx context.Context, id, ifMatch string) (Policy, error) {
	p, err := caller(ctx)
	if err != nil {
		return Policy{}, err
	}
	var lastErr error
	for range deleteAttempts {
		cur, err := s.get(ctx, p, id)
		if err != nil {
			return Policy{}, err
		}
		if ifMatch != "" {
			if err := CheckIfMatch(ifMatch, cur); err != nil {
				return Policy{}, err
			}
		}
		err = s.store.DeletePolicy(ctx, id, cur.Version)
		switch {
		case err == nil:
			s.log.InfoContext(ctx, "policy deleted", "policy", id, "tenant", cur.TenantID, "by", p.Subject)
			return cur, nil
		case errs.Is(err, errs.NotFound):
			return Policy{}, notFound()
		case !errors.Is(err, ErrVersionConflict):
			return Policy{}, fmt.Errorf("delete policy %s: %w", id, err)
		case ifMatch != "":
			return Policy{}, errs.Wrap(errs.PreconditionFailed, err, "the policy was changed since it was read; get it again and retry")
		}
		lastErr = errs.Wrap(errs.Conflict, err, "the policy kept changing while it was being deleted; retry")
	}
	return Policy{}, lastErr
}
