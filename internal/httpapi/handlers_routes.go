package httpapi

import (
	"context"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/httpapi/gen"
	"github.com/nops-kernel/nops/internal/routing"
)

// Routes belong to one tenant: tenantFor takes it from the credential (a SUPER_ADMIN names it),
// and another tenant's route answers 404 like any missing one.

// routes returns the routing service, or 503 when the kernel runs without it.
func (h *handlers) routes() (*routing.Service, error) {
	if h.deps.Control.Routes == nil {
		return nil, errs.New(errs.Unavailable, "routing tables are not enabled on this kernel")
	}
	return h.deps.Control.Routes, nil
}

func (h *handlers) ListRoutes(ctx context.Context, req gen.ListRoutesRequestObject) (gen.ListRoutesResponseObject, error) {
	svc, err := h.routes()
	if err != nil {
		return nil, err
	}
	tenantID, err := h.tenantFor(ctx, req.Params.Tenant)
	if err != nil {
		return nil, err
	}
	// The contract allows pages of up to 500, the service serves at most MaxListLimit: a shorter
	// page with a next_cursor is a valid answer to a larger limit.
	limit := min(deref(req.Params.Limit), routing.MaxListLimit)
	page, err := svc.List(ctx, tenantID, routing.ListInput{Cursor: deref(req.Params.Cursor), Limit: limit})
	if err != nil {
		return nil, err
	}
	out := gen.ListRoutes200JSONResponse{Items: make([]gen.Route, 0, len(page.Routes)), NextCursor: optString(page.NextCursor)}
	for _, r := range page.Routes {
		out.Items = append(out.Items, routeOut(r))
	}
	return out, nil
}

func (h *handlers) GetRoute(ctx context.Context, req gen.GetRouteRequestObject) (gen.GetRouteResponseObject, error) {
	svc, err := h.routes()
	if err != nil {
		return nil, err
	}
	tenantID, err := h.tenantFor(ctx, req.Params.Tenant)
	if err != nil {
		return nil, err
	}
	r, err := svc.Get(ctx, tenantID, req.Capability)
	if err != nil {
		return nil, err
	}
	return gen.GetRoute200JSONResponse{Body: routeOut(r), Headers: gen.GetRoute200ResponseHeaders{ETag: ptr(r.ETag())}}, nil
}

func (h *handlers) PutRoute(ctx context.Context, req gen.PutRouteRequestObject) (gen.PutRouteResponseObject, error) {
	if _, err := h.routes(); err != nil {
		return nil, err
	}
	tenantID, err := h.tenantFor(ctx, req.Params.Tenant)
	if err != nil {
		return nil, err
	}
	pre := routing.Preconditions{IfMatch: deref(req.Params.IfMatch), IfNoneMatch: deref(req.Params.IfNoneMatch)}
	ch, err := h.deps.Control.PutRoute(ctx, tenantID, req.Capability, pre, routeSpecIn(*req.Body))
	if err != nil {
		return nil, err
	}
	if ch.Created {
		return gen.PutRoute201JSONResponse{Body: routeOut(ch.After), Headers: gen.PutRoute201ResponseHeaders{ETag: ptr(ch.After.ETag())}}, nil
	}
	return gen.PutRoute200JSONResponse{Body: routeOut(ch.After), Headers: gen.PutRoute200ResponseHeaders{ETag: ptr(ch.After.ETag())}}, nil
}

func (h *handlers) DeleteRoute(ctx context.Context, req gen.DeleteRouteRequestObject) (gen.DeleteRouteResponseObject, error) {
	if _, err := h.routes(); err != nil {
		return nil, err
	}
	tenantID, err := h.tenantFor(ctx, req.Params.Tenant)
	if err != nil {
		return nil, err
	}
	if err := h.deps.Control.DeleteRoute(ctx, tenantID, req.Capability, deref(req.Params.IfMatch)); err != nil {
		return nil, err
	}
	return gen.DeleteRoute204Response{}, nil
}

// routeSpecIn converts the body; validation is the routing package's.
func routeSpecIn(b gen.RouteSpec) routing.Spec {
	s := routing.Spec{
		Targets:      make([]routing.Target, 0, len(b.Targets)),
		StickyHeader: deref(b.StickyHeader),
		TimeoutMs:    deref(b.TimeoutMs),
		Retryable:    deref(b.Retryable),
	}
	for _, t := range b.Targets {
		s.Targets = append(s.Targets, routing.Target{AgentID: deref(t.AgentId), Version: deref(t.Version), Weight: t.Weight, Priority: deref(t.Priority)})
	}
	if b.Hedge != nil {
		s.Hedge = &routing.Hedge{DelayMs: b.Hedge.DelayMs, MaxExtra: b.Hedge.MaxExtra}
	}
	return s
}

func routeOut(r routing.Route) gen.Route {
	out := gen.Route{
		Tenant:       r.TenantID,
		Capability:   r.Capability,
		Targets:      make([]gen.RouteTarget, 0, len(r.Targets)),
		StickyHeader: optString(r.StickyHeader),
		Retryable:    r.Retryable,
		CreatedAt:    r.CreatedAt.UTC(),
		UpdatedAt:    r.UpdatedAt.UTC(),
		Revision:     r.Revision,
	}
	for _, t := range r.Targets {
		out.Targets = append(out.Targets, gen.RouteTarget{AgentId: optString(t.AgentID), Version: optString(t.Version), Weight: t.Weight, Priority: ptr(t.Priority)})
	}
	if r.TimeoutMs > 0 {
		out.TimeoutMs = ptr(r.TimeoutMs)
	}
	if r.Hedge != nil {
		out.Hedge = &gen.RouteHedge{DelayMs: r.Hedge.DelayMs, MaxExtra: r.Hedge.MaxExtra}
	}
	return out
}
