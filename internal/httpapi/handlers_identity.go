package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nops-kernel/nops/internal/apikey"
	"github.com/nops-kernel/nops/internal/control"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/httpapi/gen"
	"github.com/nops-kernel/nops/internal/identity"
	"github.com/nops-kernel/nops/internal/principal"
	"github.com/nops-kernel/nops/internal/registry"
	"github.com/nops-kernel/nops/internal/user"
)

// IdentityCA is the built-in CA as the identity endpoints use it; *identity.CA implements it.
type IdentityCA interface {
	TrustDomain() spiffeid.TrustDomain
	Sign(csrDER []byte, id spiffeid.ID, ttl time.Duration) (identity.SVID, error)
	BundleJWKS() (body []byte, etag string)
	BundlePEM() []byte
}

// bundleCacheControl follows the kernel's policy for every response (no-store, see
// middleware.SecurityHeaders): SPIFFE clients poll the bundle at its refresh hint anyway, and
// conditional requests (If-None-Match → 304) keep the polls cheap.
const bundleCacheControl = "no-store"

func (h *handlers) identityCA() (IdentityCA, error) {
	if h.deps.Identity == nil {
		return nil, errs.New(errs.Unavailable, "workload identity is not enabled on this kernel")
	}
	return h.deps.Identity, nil
}

// IssueSVID signs the caller's CSR. Who the SVID is for comes from the principal alone (see
// svidSubject); the CSR only brings the public key. The order of the checks: the caller's kind
// (403 for a principal naming no agent it may be), the tenant (404 for another one), the CSR
// (400), then whom a caller that is no agent may issue for (403, 400, 404).
func (h *handlers) IssueSVID(ctx context.Context, req gen.IssueSVIDRequestObject) (gen.IssueSVIDResponseObject, error) {
	ca, err := h.identityCA()
	if err != nil {
		return nil, err
	}
	p, ok := principal.FromContext(ctx)
	if !ok {
		return nil, errs.New(errs.Internal, "no principal on an authenticated route")
	}
	callerTenant, callerAgent, err := h.callerAgent(ctx, ca.TrustDomain(), p)
	if err != nil {
		return nil, err
	}
	tenantID, err := h.tenantFor(ctx, req.Params.Tenant)
	if err != nil {
		return nil, err
	}
	if callerAgent != "" && callerTenant != tenantID {
		return nil, errs.New(errs.NotFound, "tenant not found")
	}
	der, err := identity.DecodeCSR(req.Body.Csr)
	if err != nil {
		return nil, err
	}
	agentID, err := h.svidSubject(ctx, p, tenantID, callerAgent, deref(req.Body.AgentId))
	if err != nil {
		return nil, err
	}
	id, err := identity.AgentID(ca.TrustDomain(), tenantID, agentID)
	if err != nil {
		return nil, errs.Wrap(errs.Invalid, err, "the agent's ID cannot be a SPIFFE ID path segment")
	}
	var ttl time.Duration
	if req.Body.TtlSeconds != nil {
		ttl = time.Duration(*req.Body.TtlSeconds) * time.Second
	}
	svid, err := ca.Sign(der, id, ttl)
	if err != nil {
		return nil, err
	}
	// The SVID is handed out only once its issuance is on record.
	if err := h.deps.Control.RecordAction(ctx, control.Action{
		Tenant: tenantID, Action: identity.AuditActionIssue, Resource: "agents/" + agentID,
		Reason: fmt.Sprintf("allowed: serial %s, %s, expires %s", svid.Serial, id, svid.NotAfter.Format(time.RFC3339)),
	}); err != nil {
		return nil, err
	}
	return gen.IssueSVID200JSONResponse{
		SpiffeId:  id.String(),
		SvidChain: string(svid.ChainPEM()),
		ExpiresAt: svid.NotAfter,
		Serial:    svid.Serial,
		Bundle:    string(ca.BundlePEM()),
	}, nil
}

// svidSubject decides which agent of tenantID an SVID is for. An agent (callerAgent set) gets its
// own identity and nothing else. A caller that is no agent gets 403, unless it is an ADMIN or
// SUPER_ADMIN naming an agent of the tenant (404 otherwise, as for any resource of another tenant).
// The agent must still be registered. Refusals are audited.
func (h *handlers) svidSubject(ctx context.Context, p principal.Principal, tenantID, callerAgent, named string) (string, error) {
	agentID := callerAgent
	switch {
	case callerAgent != "" && named != "" && named != callerAgent:
		return "", h.denySVID(ctx, tenantID, named, "an agent is issued SVIDs for itself only")
	case callerAgent != "":
	case !slices.Contains(p.Roles, user.RoleSuperAdmin) && !slices.Contains(p.Roles, user.RoleAdmin):
		return "", h.denySVID(ctx, tenantID, named, "the caller is no agent, and only ADMIN or SUPER_ADMIN may issue for one")
	case named == "":
		return "", errs.Field("body.agent_id", "required: the caller is no agent, so it must name the agent to issue for")
	default:
		agentID = named
	}
	// A deregistered agent's SVID (valid until it expires) or an operator naming it gets nothing.
	if _, err := h.deps.Control.Agents.Get(ctx, tenantID, agentID); err != nil {
		return "", err
	}
	return agentID, nil
}

// callerAgent returns the agent the principal is, "" for one that is no agent. The principal of an
// agent's SVID (internal/scope: Workload.Principal) has the agent's ID as Subject and its tenant;
// a principal whose Subject is a SPIFFE ID is accepted too when it names an agent of this trust
// domain and of the principal's tenant. An API key principal (or a token minted from a key) has
// the key ID as Subject, and the key may be bound to an agent; a key revoked or expired since the
// token was minted makes the caller no agent of anything.
func (h *handlers) callerAgent(ctx context.Context, td spiffeid.TrustDomain, p principal.Principal) (tenantID, agentID string, err error) {
	switch {
	case strings.HasPrefix(p.Subject, registry.IDPrefix):
		if p.Tenant == "" {
			return "", "", h.denySVID(ctx, "", p.Subject, "an agent principal without a tenant")
		}
		return p.Tenant, p.Subject, nil
	case strings.HasPrefix(p.Subject, "spiffe://"):
		id, err := spiffeid.FromString(p.Subject)
		if err != nil {
			return "", "", h.denySVID(ctx, p.Tenant, "", "the caller's SPIFFE ID is malformed")
		}
		tenantID, agentID, err := identity.ParseAgentID(td, id)
		if err != nil || tenantID != p.Tenant {
			return "", "", h.denySVID(ctx, p.Tenant, "", "the caller's SPIFFE ID is not an agent's of this trust domain and tenant")
		}
		return tenantID, agentID, nil
	case apikey.ValidID(p.Subject):
		k, err := h.deps.Control.Keys.Get(ctx, p.Subject)
		if err != nil {
			return "", "", err
		}
		if now := h.deps.now(); k.Revoked(now) || k.Expired(now) {
			return "", "", h.denySVID(ctx, p.Tenant, k.AgentID, "the caller's API key is revoked or expired")
		}
		return k.TenantID, k.AgentID, nil
	}
	return p.Tenant, "", nil
}

// denySVID audits a refused issuance and returns the 403.
func (h *handlers) denySVID(ctx context.Context, tenantID, agentID, reason string) error {
	resource := "agents/" + agentID
	if agentID == "" {
		resource = "identity/svid"
	}
	if err := h.deps.Control.Deny(ctx, tenantID, identity.AuditActionIssue, resource, "denied: "+reason); err != nil {
		return err
	}
	return errs.New(errs.Forbidden, "%s", reason)
}

// GetTrustBundle serves the SPIFFE bundle as the CA rendered it (the same bytes on every replica),
// with its entity tag.
func (h *handlers) GetTrustBundle(_ context.Context, req gen.GetTrustBundleRequestObject) (gen.GetTrustBundleResponseObject, error) {
	ca, err := h.identityCA()
	if err != nil {
		return nil, err
	}
	body, etag := ca.BundleJWKS()
	cc := bundleCacheControl
	if inm := deref(req.Params.IfNoneMatch); inm != "" && etagMatches(inm, etag) {
		return gen.GetTrustBundle304Response{Headers: gen.GetTrustBundle304ResponseHeaders{CacheControl: &cc, ETag: &etag}}, nil
	}
	return rawBundle{body: body, etag: etag}, nil
}

// etagMatches reports whether an If-None-Match list names etag (weak comparison, RFC 9110
// §13.1.2) or is "*".
func etagMatches(header, etag string) bool {
	for t := range strings.SplitSeq(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == "*" || t == etag {
			return true
		}
	}
	return false
}

// rawBundle writes the bundle's bytes unchanged: re-encoding them through the generated struct
// would drop members the schema does not list.
type rawBundle struct {
	body []byte
	etag string
}

func (b rawBundle) VisitGetTrustBundleResponse(w http.ResponseWriter) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", bundleCacheControl)
	w.Header().Set("ETag", b.etag)
	w.WriteHeader(http.StatusOK)
	_, err := w.Write(b.body)
	return err
}
