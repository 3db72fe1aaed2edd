package httpapi

import (
	"context"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/httpapi/gen"
	"github.com/nops-kernel/nops/internal/policy"
	"github.com/nops-kernel/nops/internal/principal"
)

// The policy service reads the principal from the context and scopes every call by it: a
// tenant-bound caller sees and writes its tenant's policies only (another tenant's answers 404),
// a principal above tenants every policy. The handlers add the `tenant` query parameter's rules.

// policies returns the policy service, or 503 when the kernel runs without it.
func (h *handlers) policies() (*policy.Service, error) {
	if h.deps.Control.Policies == nil {
		return nil, errs.New(errs.Unavailable, "ABAC policies are not enabled on this kernel")
	}
	return h.deps.Control.Policies, nil
}

// policyTenant resolves the `tenant` query parameter of a policy operation: "" for a
// tenant-bound caller (the service uses its tenant; naming another answers 404) and, for a
// principal above tenants, the named tenant, which must exist, or "" for the global policies.
func (h *handlers) policyTenant(ctx context.Context, named *string) (string, error) {
	p, ok := principal.FromContext(ctx)
	if !ok {
		return "", errs.New(errs.Internal, "no principal on an authenticated route")
	}
	if p.Tenant != "" {
		if named != nil && *named != p.Tenant {
			return "", errs.New(errs.NotFound, "tenant not found")
		}
		return "", nil
	}
	if named == nil || *named == "" {
		return "", nil
	}
	if _, err := h.deps.Control.Tenants.Get(ctx, *named); err != nil {
		return "", err
	}
	return *named, nil
}

// policyIn reads a policy by ID as the caller may see it. When the request names a tenant, the
// policy must be of that tenant, or it is "not found".
func (h *handlers) policyIn(ctx context.Context, named *string, id string) (policy.Policy, error) {
	svc, err := h.policies()
	if err != nil {
		return policy.Policy{}, err
	}
	tenantID, err := h.policyTenant(ctx, named)
	if err != nil {
		return policy.Policy{}, err
	}
	p, err := svc.Get(ctx, id)
	if err != nil {
		return policy.Policy{}, err
	}
	if tenantID != "" && p.TenantID != tenantID {
		return policy.Policy{}, errs.New(errs.NotFound, "policy not found")
	}
	return p, nil
}

func (h *handlers) CreatePolicy(ctx context.Context, req gen.CreatePolicyRequestObject) (gen.CreatePolicyResponseObject, error) {
	if _, err := h.policies(); err != nil {
		return nil, err
	}
	tenantID, err := h.policyTenant(ctx, req.Params.Tenant)
	if err != nil {
		return nil, err
	}
	p, err := h.deps.Control.CreatePolicy(ctx, policy.CreateInput{TenantID: tenantID, Spec: policySpecIn(*req.Body)})
	if err != nil {
		return nil, err
	}
	return gen.CreatePolicy201JSONResponse{Body: policyOut(p), Headers: gen.CreatePolicy201ResponseHeaders{ETag: ptr(p.ETag())}}, nil
}

func (h *handlers) ListPolicies(ctx context.Context, req gen.ListPoliciesRequestObject) (gen.ListPoliciesResponseObject, error) {
	svc, err := h.policies()
	if err != nil {
		return nil, err
	}
	tenantID, err := h.policyTenant(ctx, req.Params.Tenant)
	if err != nil {
		return nil, err
	}
	// The contract allows pages of up to 500, the service serves at most MaxListLimit: a shorter
	// page with a next_cursor is a valid answer to a larger limit.
	limit := min(deref(req.Params.Limit), policy.MaxListLimit)
	page, err := svc.List(ctx, policy.ListInput{TenantID: tenantID, Cursor: deref(req.Params.Cursor), Limit: limit})
	if err != nil {
		return nil, err
	}
	out := gen.ListPolicies200JSONResponse{Items: make([]gen.Policy, 0, len(page.Policies)), NextCursor: optString(page.NextCursor)}
	for _, p := range page.Policies {
		out.Items = append(out.Items, policyOut(p))
	}
	return out, nil
}

func (h *handlers) GetPolicy(ctx context.Context, req gen.GetPolicyRequestObject) (gen.GetPolicyResponseObject, error) {
	p, err := h.policyIn(ctx, req.Params.Tenant, req.PolicyId)
	if err != nil {
		return nil, err
	}
	return gen.GetPolicy200JSONResponse{Body: policyOut(p), Headers: gen.GetPolicy200ResponseHeaders{ETag: ptr(p.ETag())}}, nil
}

func (h *handlers) UpdatePolicy(ctx context.Context, req gen.UpdatePolicyRequestObject) (gen.UpdatePolicyResponseObject, error) {
	if req.Params.Tenant != nil {
		if _, err := h.policyIn(ctx, req.Params.Tenant, req.PolicyId); err != nil {
			return nil, err
		}
	}
	if _, err := h.policies(); err != nil {
		return nil, err
	}
	p, err := h.deps.Control.UpdatePolicy(ctx, req.PolicyId, req.Params.IfMatch, policySpecIn(*req.Body))
	if err != nil {
		return nil, err
	}
	return gen.UpdatePolicy200JSONResponse{Body: policyOut(p), Headers: gen.UpdatePolicy200ResponseHeaders{ETag: ptr(p.ETag())}}, nil
}

func (h *handlers) DeletePolicy(ctx context.Context, req gen.DeletePolicyRequestObject) (gen.DeletePolicyResponseObject, error) {
	if req.Params.Tenant != nil {
		if _, err := h.policyIn(ctx, req.Params.Tenant, req.PolicyId); err != nil {
			return nil, err
		}
	}
	if _, err := h.policies(); err != nil {
		return nil, err
	}
	if err := h.deps.Control.DeletePolicy(ctx, req.PolicyId, deref(req.Params.IfMatch)); err != nil {
		return nil, err
	}
	return gen.DeletePolicy204Response{}, nil
}

func policySpecIn(b gen.PolicySpec) policy.Spec {
	return policy.Spec{
		Name:        b.Name,
		Description: deref(b.Description),
		Effect:      policy.Effect(b.Effect),
		Expression:  b.Expression,
		Enabled:     b.Enabled,
	}
}

func policyOut(p policy.Policy) gen.Policy {
	return gen.Policy{
		Id:          p.ID,
		Tenant:      optString(p.TenantID),
		Name:        p.Name,
		Description: p.Description,
		Effect:      gen.PolicyEffect(p.Effect),
		Expression:  p.Expression,
		Enabled:     p.Enabled,
		CreatedAt:   p.CreatedAt.UTC(),
		UpdatedAt:   p.UpdatedAt.UTC(),
		Version:     p.Version,
	}
}
