package httpapi

import (
	"context"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/httpapi/gen"
	"github.com/nops-kernel/nops/internal/perimeter"
)

// A tenant's perimeter settings are read and written by a principal above tenants for any
// tenant, and by a tenant's ADMIN for its own only: another tenant answers 404, as every
// resource of another tenant does.

// perimeterOf checks that the caller may see the tenant and that it exists, and returns the
// settings service (503 when the kernel runs without it).
func (h *handlers) perimeterOf(ctx context.Context, tenantID string) (*perimeter.Service, error) {
	if err := visibleTenant(ctx, tenantID); err != nil {
		return nil, err
	}
	if h.deps.Control.Perimeter == nil {
		return nil, errs.New(errs.Unavailable, "tenant perimeter settings are not enabled on this kernel")
	}
	if _, err := h.deps.Control.Tenants.Get(ctx, tenantID); err != nil {
		return nil, err
	}
	return h.deps.Control.Perimeter, nil
}

func (h *handlers) GetTenantPerimeter(ctx context.Context, req gen.GetTenantPerimeterRequestObject) (gen.GetTenantPerimeterResponseObject, error) {
	svc, err := h.perimeterOf(ctx, req.TenantId)
	if err != nil {
		return nil, err
	}
	s, err := svc.Get(ctx, req.TenantId)
	if err != nil {
		return nil, err
	}
	return gen.GetTenantPerimeter200JSONResponse{Body: perimeterOut(s), Headers: gen.GetTenantPerimeter200ResponseHeaders{ETag: ptr(s.ETag())}}, nil
}

func (h *handlers) PutTenantPerimeter(ctx context.Context, req gen.PutTenantPerimeterRequestObject) (gen.PutTenantPerimeterResponseObject, error) {
	if _, err := h.perimeterOf(ctx, req.TenantId); err != nil {
		return nil, err
	}
	in := perimeter.Input{RequireSignatures: req.Body.RequireSignatures, GatewayOrigins: req.Body.GatewayOrigins}
	s, err := h.deps.Control.PutPerimeter(ctx, req.TenantId, in, deref(req.Params.IfMatch))
	if err != nil {
		return nil, err
	}
	return gen.PutTenantPerimeter200JSONResponse{Body: perimeterOut(s), Headers: gen.PutTenantPerimeter200ResponseHeaders{ETag: ptr(s.ETag())}}, nil
}

func perimeterOut(s perimeter.Settings) gen.TenantPerimeter {
	out := gen.TenantPerimeter{
		Tenant:            s.TenantID,
		RequireSignatures: s.RequireSignatures,
		GatewayOrigins:    make([]string, 0, len(s.GatewayOrigins)),
		Version:           s.Version,
		UpdatedAt:         optTime(s.UpdatedAt),
	}
	for _, p := range s.GatewayOrigins {
		out.GatewayOrigins = append(out.GatewayOrigins, p.String())
	}
	return out
}
