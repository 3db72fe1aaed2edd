package httpapi

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"strings"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/httpapi/gen"
	"github.com/nops-kernel/nops/internal/reqsig"
)

// The request-key service reads the principal from the context: a tenant-bound caller sees and
// changes its tenant's keys only (another tenant's answers 404), a principal above tenants every
// key. Secrets appear in the responses of create and rotate only.

// requestKeys returns the request-key service, or 503 when the kernel runs without it.
func (h *handlers) requestKeys() (*reqsig.Keys, error) {
	if h.deps.Control.RequestKeys == nil {
		return nil, errs.New(errs.Unavailable, "request signing keys are not enabled on this kernel")
	}
	return h.deps.Control.RequestKeys, nil
}

// requestKeyIn reads a key by ID as the caller may see it. When the request names a tenant, the
// key must also be of that tenant, or it is "not found".
func (h *handlers) requestKeyIn(ctx context.Context, named *string, id string) (reqsig.Key, error) {
	svc, err := h.requestKeys()
	if err != nil {
		return reqsig.Key{}, err
	}
	var tenantID string
	if named != nil {
		if tenantID, err = h.tenantFor(ctx, named); err != nil {
			return reqsig.Key{}, err
		}
	}
	k, err := svc.Get(ctx, id)
	if err != nil {
		return reqsig.Key{}, err
	}
	if tenantID != "" && k.TenantID != tenantID {
		return reqsig.Key{}, errs.New(errs.NotFound, "request key not found")
	}
	return k, nil
}

func (h *handlers) CreateRequestKey(ctx context.Context, req gen.CreateRequestKeyRequestObject) (gen.CreateRequestKeyResponseObject, error) {
	if _, err := h.requestKeys(); err != nil {
		return nil, err
	}
	tenantID, err := h.tenantFor(ctx, req.Params.Tenant)
	if err != nil {
		return nil, err
	}
	b := req.Body
	in := reqsig.CreateInput{
		TenantID:  tenantID,
		AgentID:   deref(b.AgentId),
		Name:      deref(b.Name),
		Alg:       reqsig.Algorithm(b.Alg),
		ExpiresAt: deref(b.ExpiresAt),
	}
	if b.PublicKey != nil {
		if in.PublicKey, err = reqsig.ParsePublicKey(*b.PublicKey, "body.public_key"); err != nil {
			return nil, err
		}
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
	k, secret, err := h.deps.Control.CreateRequestKey(ctx, in)
	if err != nil {
		return nil, err
	}
	return gen.CreateRequestKey201JSONResponse(requestKeySecretOut(k, secret, h.deps.now())), nil
}

func (h *handlers) ListRequestKeys(ctx context.Context, req gen.ListRequestKeysRequestObject) (gen.ListRequestKeysResponseObject, error) {
	svc, err := h.requestKeys()
	if err != nil {
		return nil, err
	}
	tenantID, err := h.tenantFor(ctx, req.Params.Tenant)
	if err != nil {
		return nil, err
	}
	// The contract allows pages of up to 500, the service serves at most MaxListLimit: a shorter
	// page with a next_cursor is a valid answer to a larger limit.
	limit := min(deref(req.Params.Limit), reqsig.MaxListLimit)
	page, err := svc.List(ctx, reqsig.ListInput{TenantID: tenantID, Cursor: deref(req.Params.Cursor), Limit: limit})
	if err != nil {
		return nil, err
	}
	now := h.deps.now()
	out := gen.ListRequestKeys200JSONResponse{Items: make([]gen.RequestKey, 0, len(page.Keys)), NextCursor: optString(page.NextCursor)}
	for _, k := range page.Keys {
		out.Items = append(out.Items, requestKeyOut(k, now))
	}
	return out, nil
}

func (h *handlers) GetRequestKey(ctx context.Context, req gen.GetRequestKeyRequestObject) (gen.GetRequestKeyResponseObject, error) {
	k, err := h.requestKeyIn(ctx, req.Params.Tenant, req.KeyId)
	if err != nil {
		return nil, err
	}
	return gen.GetRequestKey200JSONResponse(requestKeyOut(k, h.deps.now())), nil
}

func (h *handlers) RotateRequestKey(ctx context.Context, req gen.RotateRequestKeyRequestObject) (gen.RotateRequestKeyResponseObject, error) {
	if req.Params.Tenant != nil {
		if _, err := h.requestKeyIn(ctx, req.Params.Tenant, req.KeyId); err != nil {
			return nil, err
		}
	}
	if _, err := h.requestKeys(); err != nil {
		return nil, err
	}
	var in reqsig.RotateInput
	if b := req.Body; b != nil {
		var err error
		if in.Grace, err = requestKeyGrace(b.GracePeriod); err != nil {
			return nil, err
		}
		if b.PublicKey != nil {
			if in.PublicKey, err = reqsig.ParsePublicKey(*b.PublicKey, "body.public_key"); err != nil {
				return nil, err
			}
		}
	}
	k, secret, err := h.deps.Control.RotateRequestKey(ctx, req.KeyId, in)
	if err != nil {
		return nil, err
	}
	return gen.RotateRequestKey200JSONResponse(requestKeySecretOut(k, secret, h.deps.now())), nil
}

func (h *handlers) RevokeRequestKey(ctx context.Context, req gen.RevokeRequestKeyRequestObject) (gen.RevokeRequestKeyResponseObject, error) {
	if req.Params.Tenant != nil {
		if _, err := h.requestKeyIn(ctx, req.Params.Tenant, req.KeyId); err != nil {
			return nil, err
		}
	}
	if _, err := h.requestKeys(); err != nil {
		return nil, err
	}
	if err := h.deps.Control.RevokeRequestKey(ctx, req.KeyId); err != nil {
		return nil, err
	}
	return gen.RevokeRequestKey204Response{}, nil
}

// requestKeyGrace reads the grace period of a rotation: absent means the service's default (24 h).
// The service reads 0 as "the default", so an explicit 0s becomes the shortest grace it keeps.
func requestKeyGrace(s *string) (time.Duration, error) {
	if s == nil {
		return 0, nil
	}
	d, err := time.ParseDuration(strings.TrimSpace(*s))
	switch {
	case err != nil:
		return 0, errs.Field("body.grace_period", "must be a Go duration such as 24h, 90m or 0s")
	case d < 0 || d > reqsig.MaxGrace:
		return 0, errs.Field("body.grace_period", "must be between 0s and "+reqsig.MaxGrace.String())
	case d == 0:
		return noGrace, nil
	}
	return d, nil
}

// requestKeyOut renders a key without its secrets: the sealed secrets are never shown, the
// public keys of an ed25519 key are not secret.
func requestKeyOut(k reqsig.Key, now time.Time) gen.RequestKey {
	out := gen.RequestKey{
		Id:         k.ID,
		Tenant:     k.TenantID,
		AgentId:    optString(k.AgentID),
		Name:       optString(k.Name),
		Alg:        gen.RequestKeyAlg(k.Alg),
		Status:     gen.RequestKeyStatus(k.Status(now)),
		Generation: k.Generation,
		CreatedBy:  optString(k.CreatedBy),
		CreatedAt:  k.CreatedAt.UTC(),
		ExpiresAt:  optTime(k.ExpiresAt),
		RevokedAt:  optTime(k.RevokedAt),
	}
	if len(k.PublicKey) == ed25519.PublicKeySize {
		out.PublicKey = ptr(base64.RawURLEncoding.EncodeToString(k.PublicKey))
	}
	if len(k.PrevPublicKey) > 0 || len(k.PrevSealedSecret) > 0 {
		out.PreviousValidUntil = optTime(k.PrevValidUntil)
	}
	return out
}

// requestKeySecretOut is requestKeyOut with the secret, for the two responses that show it once;
// secret is "" for an ed25519 key, whose private key the kernel never sees.
func requestKeySecretOut(k reqsig.Key, secret string, now time.Time) gen.RequestKeySecret {
	o := requestKeyOut(k, now)
	return gen.RequestKeySecret{
		Id:                 o.Id,
		Tenant:             o.Tenant,
		AgentId:            o.AgentId,
		Name:               o.Name,
		Alg:                o.Alg,
		Status:             o.Status,
		PublicKey:          o.PublicKey,
		Generation:         o.Generation,
		CreatedBy:          o.CreatedBy,
		CreatedAt:          o.CreatedAt,
		ExpiresAt:          o.ExpiresAt,
		RevokedAt:          o.RevokedAt,
		PreviousValidUntil: o.PreviousValidUntil,
		Secret:             optString(secret),
	}
}
