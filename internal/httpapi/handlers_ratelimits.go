package httpapi

import (
	"context"
	"strings"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/httpapi/gen"
	"github.com/nops-kernel/nops/internal/ratelimit"
)

// The rate-limit override operations need system scopes, which only a principal above tenants
// holds; overrides are the kernel's, not a tenant's, and are recorded in the global tree.

// rateLimits returns the override service, or 503 when the kernel runs without it.
func (h *handlers) rateLimits() (*ratelimit.Overrides, error) {
	if h.deps.Control.RateLimits == nil {
		return nil, errs.New(errs.Unavailable, "rate limit overrides are not enabled on this kernel")
	}
	return h.deps.Control.RateLimits, nil
}

func (h *handlers) ListRateLimitOverrides(ctx context.Context, _ gen.ListRateLimitOverridesRequestObject) (gen.ListRateLimitOverridesResponseObject, error) {
	svc, err := h.rateLimits()
	if err != nil {
		return nil, err
	}
	list, err := svc.List(ctx)
	if err != nil {
		return nil, err
	}
	out := gen.ListRateLimitOverrides200JSONResponse{Items: make([]gen.RateLimitOverride, 0, len(list))}
	for _, o := range list {
		out.Items = append(out.Items, overrideOut(o))
	}
	return out, nil
}

func (h *handlers) SetRateLimitOverride(ctx context.Context, req gen.SetRateLimitOverrideRequestObject) (gen.SetRateLimitOverrideResponseObject, error) {
	if _, err := h.rateLimits(); err != nil {
		return nil, err
	}
	b := req.Body
	period, err := time.ParseDuration(strings.TrimSpace(b.Period))
	if err != nil {
		return nil, errs.Field("body.period", "must be a Go duration such as 1m, 90s or 1h")
	}
	in := ratelimit.OverrideInput{Kind: ratelimit.OverrideKind(b.Kind), Target: b.Target, Limit: b.Limit, Period: period, Burst: deref(b.Burst)}
	// The service validates too, naming fields without their place in the request.
	if _, err := in.Validate("body."); err != nil {
		return nil, err
	}
	o, err := h.deps.Control.PutRateLimitOverride(ctx, in)
	if err != nil {
		return nil, err
	}
	// An upsert keeps the created_at of the override it replaced and sets updated_at; a new
	// override has both set to the same instant.
	if o.CreatedAt.Equal(o.UpdatedAt) {
		return gen.SetRateLimitOverride201JSONResponse(overrideOut(o)), nil
	}
	return gen.SetRateLimitOverride200JSONResponse(overrideOut(o)), nil
}

func (h *handlers) GetRateLimitOverride(ctx context.Context, req gen.GetRateLimitOverrideRequestObject) (gen.GetRateLimitOverrideResponseObject, error) {
	svc, err := h.rateLimits()
	if err != nil {
		return nil, err
	}
	o, err := svc.Get(ctx, req.OverrideId)
	if err != nil {
		return nil, err
	}
	return gen.GetRateLimitOverride200JSONResponse(overrideOut(o)), nil
}

func (h *handlers) DeleteRateLimitOverride(ctx context.Context, req gen.DeleteRateLimitOverrideRequestObject) (gen.DeleteRateLimitOverrideResponseObject, error) {
	if _, err := h.rateLimits(); err != nil {
		return nil, err
	}
	if err := h.deps.Control.DeleteRateLimitOverride(ctx, req.OverrideId); err != nil {
		return nil, err
	}
	return gen.DeleteRateLimitOverride204Response{}, nil
}

func overrideOut(o ratelimit.Override) gen.RateLimitOverride {
	return gen.RateLimitOverride{
		Id:        o.ID,
		Kind:      gen.RateLimitOverrideKind(o.Kind),
		Target:    o.Target,
		Limit:     o.Limit,
		Period:    o.Period.String(),
		Burst:     o.Burst,
		CreatedAt: o.CreatedAt.UTC(),
		UpdatedAt: o.UpdatedAt.UTC(),
	}
}
