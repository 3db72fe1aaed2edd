package httpapi

import (
	"context"
	"strings"
	"time"

	"github.com/nops-kernel/nops/internal/apikey"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/httpapi/gen"
	"github.com/nops-kernel/nops/internal/principal"
	"github.com/nops-kernel/nops/internal/rbac"
)

// noGrace is the grace passed for an explicit grace_period of 0: the key service reads 0 as "its
// default grace" (24 h), and it keeps times at the microsecond, so one microsecond is the
// shortest grace it can express. The old secret is then refused from the next microsecond on.
const noGrace = time.Microsecond

func (h *handlers) CreateApiKey(ctx context.Context, req gen.CreateApiKeyRequestObject) (gen.CreateApiKeyResponseObject, error) {
	tenantID, err := h.tenantFor(ctx, req.Params.Tenant)
	if err != nil {
		return nil, err
	}
	p, ok := principal.FromContext(ctx)
	if !ok {
		return nil, errs.New(errs.Internal, "no principal on an authenticated route")
	}
	b := req.Body
	in := apikey.CreateInput{
		TenantID:  tenantID,
		AgentID:   deref(b.AgentId),
		Name:      b.Name,
		Role:      string(b.Role),
		ExpiresAt: deref(b.ExpiresAt),
	}
	if b.Scopes != nil {
		in.Scopes = *b.Scopes
	} else {
		in.Scopes = defaultKeyScopes(p, in.Role)
	}
	if in.AgentID != "" {
		// A key bound to an agent must name one of the tenant's agents; the key service only
		// checks the ID's shape.
		if _, err := h.deps.Control.Agents.Get(ctx, tenantID, in.AgentID); err != nil {
			if errs.Is(err, errs.NotFound) {
				return nil, errs.Field("body.agent_id", "no such agent in the tenant")
			}
			return nil, err
		}
	}
	k, raw, err := h.deps.Control.CreateAPIKey(ctx, in)
	if err != nil {
		return nil, err
	}
	return gen.CreateApiKey201JSONResponse(keySecretOut(k, raw)), nil
}

func (h *handlers) ListApiKeys(ctx context.Context, req gen.ListApiKeysRequestObject) (gen.ListApiKeysResponseObject, error) {
	tenantID, err := h.tenantFor(ctx, req.Params.Tenant)
	if err != nil {
		return nil, err
	}
	// The contract allows pages of up to 500, the key service serves at most MaxListLimit: a
	// shorter page with a next_cursor is a valid answer to a larger limit.
	limit := min(deref(req.Params.Limit), apikey.MaxListLimit)
	page, err := h.deps.Control.Keys.List(ctx, apikey.ListInput{TenantID: tenantID, Cursor: deref(req.Params.Cursor), Limit: limit})
	if err != nil {
		return nil, err
	}
	out := gen.ListApiKeys200JSONResponse{Items: make([]gen.ApiKey, 0, len(page.Keys)), NextCursor: optString(page.NextCursor)}
	for _, k := range page.Keys {
		out.Items = append(out.Items, keyOut(k))
	}
	return out, nil
}

func (h *handlers) GetApiKey(ctx context.Context, req gen.GetApiKeyRequestObject) (gen.GetApiKeyResponseObject, error) {
	k, err := h.keyIn(ctx, req.Params.Tenant, req.KeyId)
	if err != nil {
		return nil, err
	}
	return gen.GetApiKey200JSONResponse(keyOut(k)), nil
}

func (h *handlers) RotateApiKey(ctx context.Context, req gen.RotateApiKeyRequestObject) (gen.RotateApiKeyResponseObject, error) {
	grace, err := graceIn(req.Body)
	if err != nil {
		return nil, err
	}
	if req.Params.Tenant != nil {
		if _, err := h.keyIn(ctx, req.Params.Tenant, req.KeyId); err != nil {
			return nil, err
		}
	}
	k, raw, err := h.deps.Control.RotateAPIKey(ctx, req.KeyId, grace)
	if err != nil {
		return nil, err
	}
	return gen.RotateApiKey200JSONResponse(keySecretOut(k, raw)), nil
}

func (h *handlers) RevokeApiKey(ctx context.Context, req gen.RevokeApiKeyRequestObject) (gen.RevokeApiKeyResponseObject, error) {
	if req.Params.Tenant != nil {
		if _, err := h.keyIn(ctx, req.Params.Tenant, req.KeyId); err != nil {
			return nil, err
		}
	}
	if err := h.deps.Control.RevokeAPIKey(ctx, req.KeyId); err != nil {
		return nil, err
	}
	return gen.RevokeApiKey204Response{}, nil
}

// defaultExpiringWindow is the window of GET /v1/admin/api-keys/expiring without ?within.
const defaultExpiringWindow = 7 * 24 * time.Hour

// defaultRotationDeadline is the deadline of a force-rotate without one.
const defaultRotationDeadline = 24 * time.Hour

func (h *handlers) ListExpiringApiKeys(ctx context.Context, req gen.ListExpiringApiKeysRequestObject) (gen.ListExpiringApiKeysResponseObject, error) {
	tenantID := ""
	if p, ok := principal.FromContext(ctx); ok && (p.Tenant != "" || req.Params.Tenant != nil) {
		var err error
		if tenantID, err = h.tenantFor(ctx, req.Params.Tenant); err != nil {
			return nil, err
		}
	}
	within, err := durationIn("query.within", req.Params.Within, defaultExpiringWindow)
	if err != nil {
		return nil, err
	}
	limit := min(deref(req.Params.Limit), apikey.MaxListLimit)
	page, err := h.deps.Control.Keys.ListDue(ctx, apikey.DueInput{TenantID: tenantID, Within: within, Cursor: deref(req.Params.Cursor), Limit: limit})
	if err != nil {
		return nil, err
	}
	out := gen.ListExpiringApiKeys200JSONResponse{Items: make([]gen.ApiKey, 0, len(page.Keys)), NextCursor: optString(page.NextCursor)}
	for _, k := range page.Keys {
		out.Items = append(out.Items, keyOut(k))
	}
	return out, nil
}

func (h *handlers) ForceRotateApiKey(ctx context.Context, req gen.ForceRotateApiKeyRequestObject) (gen.ForceRotateApiKeyResponseObject, error) {
	var raw *string
	if req.Body != nil {
		raw = req.Body.Deadline
	}
	deadline, err := durationIn("body.deadline", raw, defaultRotationDeadline)
	if err != nil {
		return nil, err
	}
	if req.Params.Tenant != nil {
		if _, err := h.keyIn(ctx, req.Params.Tenant, req.KeyId); err != nil {
			return nil, err
		}
	}
	k, err := h.deps.Control.ForceRotateAPIKey(ctx, req.KeyId, deadline)
	if err != nil {
		return nil, err
	}
	return gen.ForceRotateApiKey200JSONResponse(keyOut(k)), nil
}

// durationIn parses an optional Go duration named field, def when absent; negative durations are
// refused here, upper bounds by the service.
func durationIn(field string, raw *string, def time.Duration) (time.Duration, error) {
	if raw == nil {
		return def, nil
	}
	d, err := time.ParseDuration(strings.TrimSpace(*raw))
	switch {
	case err != nil:
		return 0, errs.Field(field, "must be a Go duration such as 24h, 90m or 0s")
	case d < 0:
		return 0, errs.Field(field, "must not be negative")
	}
	return d, nil
}

// keyIn reads a key by ID. The key service already hides another tenant's key from a
// tenant-bound caller and lets a principal above tenants reach any key; when the request names a
// tenant, the key must also be of that tenant, or it is "not found".
func (h *handlers) keyIn(ctx context.Context, named *string, id string) (apikey.Key, error) {
	var tenantID string
	if named != nil {
		var err error
		if tenantID, err = h.tenantFor(ctx, named); err != nil {
			return apikey.Key{}, err
		}
	}
	k, err := h.deps.Control.Keys.Get(ctx, id)
	if err != nil {
		return apikey.Key{}, err
	}
	if tenantID != "" && k.TenantID != tenantID {
		return apikey.Key{}, errs.New(errs.NotFound, "api key not found")
	}
	return k, nil
}

// defaultKeyScopes are the scopes of a key created without any: all that role grants and the
// creator holds, so a key never carries more than its creator.
func defaultKeyScopes(p principal.Principal, role string) []string {
	out := []string{}
	for _, s := range rbac.ScopesFor([]string{role}) {
		if p.HasScopes(s) {
			out = append(out, s)
		}
	}
	return out
}

// graceIn reads the grace period of a rotation: absent means the key service's default.
func graceIn(body *gen.ApiKeyRotate) (time.Duration, error) {
	if body == nil || body.GracePeriod == nil {
		return 0, nil
	}
	d, err := durationIn("body.grace_period", body.GracePeriod, 0)
	if err == nil && d == 0 {
		return noGrace, nil
	}
	return d, err
}

// keyOut renders a key without its digests: the contract has no place for them, and the secret
// is never stored.
func keyOut(k apikey.Key) gen.ApiKey {
	out := gen.ApiKey{
		Id:         k.ID,
		Tenant:     k.TenantID,
		AgentId:    optString(k.AgentID),
		Name:       k.Name,
		Role:       k.Role,
		Scopes:     nonNil(k.Scopes),
		CreatedBy:  optString(k.CreatedBy),
		CreatedAt:  k.CreatedAt.UTC(),
		ExpiresAt:  optTime(k.ExpiresAt),
		RevokedAt:  optTime(k.RevokedAt),
		LastUsedAt: optTime(k.LastUsedAt),
		RotateBy:   optTime(k.RotateBy),
	}
	if len(k.PrevHash) > 0 {
		out.PreviousSecretValidUntil = optTime(k.PrevValidUntil)
	}
	return out
}

// keySecretOut is keyOut with the raw key, for the one response that shows it.
func keySecretOut(k apikey.Key, raw string) gen.ApiKeySecret {
	o := keyOut(k)
	return gen.ApiKeySecret{
		Id:                       o.Id,
		Tenant:                   o.Tenant,
		AgentId:                  o.AgentId,
		Name:                     o.Name,
		Role:                     o.Role,
		Scopes:                   o.Scopes,
		CreatedBy:                o.CreatedBy,
		CreatedAt:                o.CreatedAt,
		ExpiresAt:                o.ExpiresAt,
		RevokedAt:                o.RevokedAt,
		LastUsedAt:               o.LastUsedAt,
		PreviousSecretValidUntil: o.PreviousSecretValidUntil,
		Secret:                   raw,
	}
}

// optTime returns nil for the zero time ("none"), else the time in UTC.
func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}
