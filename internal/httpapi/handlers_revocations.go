package httpapi

import (
	"context"
	"time"

	"github.com/nops-kernel/nops/internal/control"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/httpapi/gen"
	"github.com/nops-kernel/nops/internal/identity"
	"github.com/nops-kernel/nops/internal/mtls"
)

// POST and GET /v1/identity/revocations: the audited use case is control.SVIDRevocations (who may
// revoke what, validation, expiry); the handlers decode, call it, apply a new revocation on this
// replica's mTLS listener, and encode.

// defaultRevocationTTL is the SVID lifetime assumed when neither the identity provider nor the
// configuration tells one (identity.svid_ttl's default).
const defaultRevocationTTL = time.Hour

// revocations returns the revocation use cases for the kernel's trust domain, or 503 when the
// kernel runs without workload identity or without a revocation store.
func (h *handlers) revocations() (*control.SVIDRevocations, error) {
	ca, err := h.identityCA()
	if err != nil {
		return nil, err
	}
	if h.deps.Revocations == nil {
		return nil, errs.New(errs.Unavailable, "SVID revocations are not enabled on this kernel")
	}
	// The longest lifetime of an SVID of the trust domain: the built-in CA's, else (SPIRE issues
	// the SVIDs) identity.svid_ttl, which the operator sets to at least SPIRE's X.509-SVID TTL.
	ttl := h.deps.Config.Identity.SVIDTTL.D()
	if c, ok := ca.(interface{ SVIDTTL() time.Duration }); ok {
		ttl = c.SVIDTTL()
	}
	if ttl <= 0 {
		ttl = defaultRevocationTTL
	}
	return h.deps.Control.SVIDRevocations(h.deps.Revocations, ca.TrustDomain(), ttl), nil
}

func (h *handlers) RevokeSVID(ctx context.Context, req gen.RevokeSVIDRequestObject) (gen.RevokeSVIDResponseObject, error) {
	rv, err := h.revocations()
	if err != nil {
		return nil, err
	}
	b := req.Body
	rec, err := rv.Revoke(ctx, control.RevokeInput{
		Serial: deref(b.Serial), SPIFFEID: deref(b.SpiffeId), Reason: deref(b.Reason), Tenant: deref(req.Params.Tenant),
	})
	if err != nil {
		return nil, err
	}
	h.applyRevocation(ctx, rec)
	return gen.RevokeSVID201JSONResponse(revocationOut(rec)), nil
}

// applyRevocation hands a stored revocation to this replica's mTLS listener, if it runs. A failure
// is logged and not returned: the revocation is committed, and the listener's poller reads it
// within its refresh interval anyway, as the other replicas do.
func (h *handlers) applyRevocation(ctx context.Context, rec identity.RevocationRecord) {
	if h.deps.Revoker == nil {
		return
	}
	r, err := rec.Revocation()
	if err == nil {
		err = h.deps.Revoker.Revoke(ctx, r)
	}
	if err != nil && h.deps.Logger != nil {
		h.deps.Logger.WarnContext(ctx, "apply a revocation on this replica's mtls listener; its poller will",
			"revocation", rec.ID, "error", err)
	}
}

func (h *handlers) ListSVIDRevocations(ctx context.Context, req gen.ListSVIDRevocationsRequestObject) (gen.ListSVIDRevocationsResponseObject, error) {
	rv, err := h.revocations()
	if err != nil {
		return nil, err
	}
	page, err := rv.List(ctx, control.RevocationListInput{
		Tenant: deref(req.Params.Tenant), Cursor: deref(req.Params.Cursor), Limit: deref(req.Params.Limit),
	})
	if err != nil {
		return nil, err
	}
	out := gen.ListSVIDRevocations200JSONResponse{Items: make([]gen.SVIDRevocation, 0, len(page.Revocations)), NextCursor: optString(page.NextCursor)}
	for _, rec := range page.Revocations {
		out.Items = append(out.Items, revocationOut(rec))
	}
	return out, nil
}

func revocationOut(rec identity.RevocationRecord) gen.SVIDRevocation {
	return gen.SVIDRevocation{
		Id: rec.ID, Serial: optString(rec.Serial), SpiffeId: optString(rec.SPIFFEID), TenantId: optString(rec.TenantID),
		Reason: optString(rec.Reason), RevokedAt: rec.RevokedAt.UTC(), ExpiresAt: rec.ExpiresAt.UTC(), Actor: rec.Actor,
	}
}

// The mTLS listener is the Revoker the kernel sets.
var _ interface {
	Revoke(ctx context.Context, rs ...mtls.Revocation) error
} = (*mtls.Server)(nil)
