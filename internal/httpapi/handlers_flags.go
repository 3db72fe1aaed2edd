package httpapi

import (
	"context"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/flags"
	"github.com/nops-kernel/nops/internal/httpapi/gen"
)

// Flags are global kernel objects: listing and writing them takes flags:read / flags:write
// (SUPER_ADMIN); evaluating one takes flags:evaluate and acts in the caller's own tenant (a
// SUPER_ADMIN names one), like any tenant-scoped read.

func (h *handlers) flagService() (*flags.Service, error) {
	if h.deps.Control.Flags == nil {
		return nil, errs.New(errs.Unavailable, "feature flags are not enabled on this kernel")
	}
	return h.deps.Control.Flags, nil
}

func (h *handlers) ListFlags(ctx context.Context, req gen.ListFlagsRequestObject) (gen.ListFlagsResponseObject, error) {
	svc, err := h.flagService()
	if err != nil {
		return nil, err
	}
	limit := min(deref(req.Params.Limit), flags.MaxListLimit)
	page, err := svc.List(ctx, flags.ListInput{Cursor: deref(req.Params.Cursor), Limit: limit})
	if err != nil {
		return nil, err
	}
	out := gen.ListFlags200JSONResponse{Items: make([]gen.Flag, 0, len(page.Flags)), NextCursor: optString(page.NextCursor)}
	for _, f := range page.Flags {
		out.Items = append(out.Items, flagOut(f))
	}
	return out, nil
}

func (h *handlers) GetFlag(ctx context.Context, req gen.GetFlagRequestObject) (gen.GetFlagResponseObject, error) {
	svc, err := h.flagService()
	if err != nil {
		return nil, err
	}
	f, err := svc.Get(ctx, req.Key)
	if err != nil {
		return nil, err
	}
	return gen.GetFlag200JSONResponse{Body: flagOut(f), Headers: gen.GetFlag200ResponseHeaders{ETag: ptr(f.ETag())}}, nil
}

func (h *handlers) PutFlag(ctx context.Context, req gen.PutFlagRequestObject) (gen.PutFlagResponseObject, error) {
	if _, err := h.flagService(); err != nil {
		return nil, err
	}
	pre := flags.Preconditions{IfMatch: deref(req.Params.IfMatch), IfNoneMatch: deref(req.Params.IfNoneMatch)}
	ch, err := h.deps.Control.PutFlag(ctx, req.Key, pre, flagSpecIn(*req.Body))
	if err != nil {
		return nil, err
	}
	if ch.Created {
		return gen.PutFlag201JSONResponse{Body: flagOut(ch.After), Headers: gen.PutFlag201ResponseHeaders{ETag: ptr(ch.After.ETag())}}, nil
	}
	return gen.PutFlag200JSONResponse{Body: flagOut(ch.After), Headers: gen.PutFlag200ResponseHeaders{ETag: ptr(ch.After.ETag())}}, nil
}

func (h *handlers) DeleteFlag(ctx context.Context, req gen.DeleteFlagRequestObject) (gen.DeleteFlagResponseObject, error) {
	if _, err := h.flagService(); err != nil {
		return nil, err
	}
	if err := h.deps.Control.DeleteFlag(ctx, req.Key, deref(req.Params.IfMatch)); err != nil {
		return nil, err
	}
	return gen.DeleteFlag204Response{}, nil
}

func (h *handlers) EvaluateFlag(ctx context.Context, req gen.EvaluateFlagRequestObject) (gen.EvaluateFlagResponseObject, error) {
	if h.deps.Flags == nil {
		return nil, errs.New(errs.Unavailable, "feature flags are not enabled on this kernel")
	}
	tenantID, err := h.tenantFor(ctx, req.Params.Tenant)
	if err != nil {
		return nil, err
	}
	t, err := h.deps.Control.Tenants.Get(ctx, tenantID)
	if err != nil {
		return nil, err
	}
	res, ok := h.deps.Flags.Evaluate(ctx, req.Key, flags.Subject{Tenant: flags.Tenant{ID: t.ID, Name: t.Name, Status: string(t.Status)}})
	if !ok {
		return nil, errs.New(errs.NotFound, "flag not found")
	}
	out := gen.FlagEvaluation{
		Key: res.Key, Tenant: tenantID, Type: gen.FlagEvaluationType(res.Type), Variant: res.Variant,
		Reason: gen.FlagEvaluationReason(res.Reason), Revision: res.Revision,
	}
	if res.Rule >= 0 {
		out.Rule = ptr(res.Rule)
	}
	return gen.EvaluateFlag200JSONResponse(out), nil
}

// flagSpecIn converts the body; validation is the flags package's.
func flagSpecIn(b gen.FlagSpec) flags.Spec {
	s := flags.Spec{
		Type:           flags.Type(b.Type),
		Description:    deref(b.Description),
		DefaultVariant: b.DefaultVariant,
		Enabled:        deref(b.Enabled),
	}
	if b.Variants != nil {
		s.Variants = *b.Variants
	}
	if b.Rules != nil {
		for _, r := range *b.Rules {
			s.Rules = append(s.Rules, flags.Rule{Expression: r.Expression, Variant: r.Variant})
		}
	}
	return s
}

func flagOut(f flags.Flag) gen.Flag {
	out := gen.Flag{
		Key: f.Key, Type: gen.FlagType(f.Type), Description: optString(f.Description), Variants: f.Variants,
		DefaultVariant: f.DefaultVariant, Enabled: f.Enabled, Rules: make([]gen.FlagRule, 0, len(f.Rules)),
		CreatedAt: f.CreatedAt.UTC(), UpdatedAt: f.UpdatedAt.UTC(), Revision: f.Revision,
	}
	if out.Variants == nil {
		out.Variants = []string{}
	}
	for _, r := range f.Rules {
		out.Rules = append(out.Rules, gen.FlagRule{Expression: r.Expression, Variant: r.Variant})
	}
	return out
}
