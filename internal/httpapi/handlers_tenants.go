package httpapi

import (
	"context"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/httpapi/gen"
	"github.com/nops-kernel/nops/internal/principal"
	"github.com/nops-kernel/nops/internal/tenant"
)

// The tenant operations are for principals above tenants (the scopes are SUPER_ADMIN's). Should
// the matrix ever grant them to a tenant-bound principal, it sees its own tenant only: any other
// is "not found", as convention 9 says of every resource of another tenant.

func (h *handlers) CreateTenant(ctx context.Context, req gen.CreateTenantRequestObject) (gen.CreateTenantResponseObject, error) {
	if p, ok := principal.FromContext(ctx); ok && p.Tenant != "" {
		return nil, errs.New(errs.Forbidden, "only a principal above tenants may create tenants")
	}
	in := tenant.CreateInput{Name: req.Body.Name, DisplayName: deref(req.Body.DisplayName)}
	t, err := h.deps.Control.CreateTenant(ctx, in)
	if err != nil {
		return nil, err
	}
	return gen.CreateTenant201JSONResponse(tenantOut(t)), nil
}

func (h *handlers) ListTenants(ctx context.Context, req gen.ListTenantsRequestObject) (gen.ListTenantsResponseObject, error) {
	if p, ok := principal.FromContext(ctx); ok && p.Tenant != "" {
		t, err := h.deps.Control.Tenants.Get(ctx, p.Tenant)
		if err != nil {
			return nil, err
		}
		return gen.ListTenants200JSONResponse{Items: []gen.Tenant{tenantOut(t)}}, nil
	}
	page, err := h.deps.Control.Tenants.List(ctx, deref(req.Params.Cursor), deref(req.Params.Limit))
	if err != nil {
		return nil, err
	}
	out := gen.ListTenants200JSONResponse{Items: make([]gen.Tenant, 0, len(page.Tenants)), NextCursor: optString(page.NextCursor)}
	for _, t := range page.Tenants {
		out.Items = append(out.Items, tenantOut(t))
	}
	return out, nil
}

func (h *handlers) GetTenant(ctx context.Context, req gen.GetTenantRequestObject) (gen.GetTenantResponseObject, error) {
	if err := visibleTenant(ctx, req.TenantId); err != nil {
		return nil, err
	}
	t, err := h.deps.Control.Tenants.Get(ctx, req.TenantId)
	if err != nil {
		return nil, err
	}
	return gen.GetTenant200JSONResponse(tenantOut(t)), nil
}

func (h *handlers) SuspendTenant(ctx context.Context, req gen.SuspendTenantRequestObject) (gen.SuspendTenantResponseObject, error) {
	if err := visibleTenant(ctx, req.TenantId); err != nil {
		return nil, err
	}
	t, err := h.deps.Control.SuspendTenant(ctx, req.TenantId)
	if err != nil {
		return nil, err
	}
	return gen.SuspendTenant200JSONResponse(tenantOut(t)), nil
}

func (h *handlers) ResumeTenant(ctx context.Context, req gen.ResumeTenantRequestObject) (gen.ResumeTenantResponseObject, error) {
	if err := visibleTenant(ctx, req.TenantId); err != nil {
		return nil, err
	}
	t, err := h.deps.Control.ResumeTenant(ctx, req.TenantId)
	if err != nil {
		return nil, err
	}
	return gen.ResumeTenant200JSONResponse(tenantOut(t)), nil
}

func (h *handlers) DeleteTenant(ctx context.Context, req gen.DeleteTenantRequestObject) (gen.DeleteTenantResponseObject, error) {
	if err := visibleTenant(ctx, req.TenantId); err != nil {
		return nil, err
	}
	if err := h.deps.Control.DeleteTenant(ctx, req.TenantId, deref(req.Params.Cascade)); err != nil {
		return nil, err
	}
	return gen.DeleteTenant204Response{}, nil
}

// visibleTenant answers "not found" when a tenant-bound caller names a tenant other than its own.
func visibleTenant(ctx context.Context, id string) error {
	p, ok := principal.FromContext(ctx)
	if !ok {
		return errs.New(errs.Internal, "no principal on an authenticated route")
	}
	if p.Tenant != "" && p.Tenant != id {
		return errs.New(errs.NotFound, "tenant not found")
	}
	return nil
}

func tenantOut(t tenant.Tenant) gen.Tenant {
	return gen.Tenant{
		Id:          t.ID,
		Name:        t.Name,
		DisplayName: t.DisplayName,
		Status:      gen.TenantStatus(t.Status),
		CreatedAt:   t.CreatedAt.UTC(),
		UpdatedAt:   t.UpdatedAt.UTC(),
		Version:     t.Version,
	}
}

// deref returns *p, or the zero value for nil.
func deref[T any](p *T) T {
	if p == nil {
		var zero T
		return zero
	}
	return *p
}

// optString returns nil for "", else a pointer to s: optional response fields are absent, not "".
func optString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
