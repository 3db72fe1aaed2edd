package httpapi

import (
	"context"
	"net/http"
	"net/netip"
	"time"

	"github.com/felixge/httpsnoop"

	"github.com/nops-kernel/nops/internal/control"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/middleware"
	"github.com/nops-kernel/nops/internal/principal"
	"github.com/nops-kernel/nops/internal/reqsig"
)

// The Zero Agent Gateway (ZAG) is the same API served on a second listener for agents without
// mTLS ("zero" or edge agents). A request that arrives through it must be signed (RFC 9421) with
// a request key of the caller's tenant, must come from an address in the tenant's gateway
// origins, and each accepted call yields a billing.usage record (GatewayUsage). Everything else —
// rate limits per tenant, in-flight caps, load shedding, body caps, slow-client timeouts, traces
// and metrics — is the perimeter every request crosses.

type gatewayKey struct{}

// Gateway marks every request h serves as arriving through the Zero Agent Gateway. The kernel
// wraps the API handler with it for the gateway listener.
func Gateway(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), gatewayKey{}, true)))
	})
}

// gatewayPublic reports whether an unauthenticated path is served on the gateway: probes and
// the documents a client needs (the spec, the token verification keys).
func gatewayPublic(path string) bool {
	return infraPath(path) || path == "/openapi.json" || path == "/.well-known/jwks.json"
}

func viaGateway(ctx context.Context) bool {
	v, _ := ctx.Value(gatewayKey{}).(bool)
	return v
}

// GatewayUsage is what the gateway reports of one accepted call, for billing.
type GatewayUsage struct {
	Tenant, Agent, Route, RequestID string
	Status                          int
	RequestBytes, ResponseBytes     int64
	Duration                        time.Duration
	StartedAt                       time.Time
}

// gatewayAdmit checks what the gateway adds for an authenticated caller: a tenant principal
// (the gateway serves tenants' agents, not operators) whose request comes from one of its
// tenant's gateway origins. Refusals are audited and answer 403.
func (d *dispatcher) gatewayAdmit(ctx context.Context, r *http.Request, p principal.Principal) error {
	resource := r.Method + " " + r.URL.Path
	if p.Tenant == "" {
		d.audit(ctx, "", control.ActionAuthorize, resource, "gateway: principal without a tenant")
		return errs.New(errs.Forbidden, "the agent gateway serves tenants' agents only")
	}
	ip, _ := clientAddrFrom(ctx)
	var origins []netip.Prefix
	if d.guards.GatewayOrigins != nil {
		origins = d.guards.GatewayOrigins(p.Tenant)
	}
	for _, o := range origins {
		if ip.IsValid() && o.Contains(ip) {
			return nil
		}
	}
	d.audit(ctx, p.Tenant, control.ActionAuthorize, resource, "gateway: client address not in the tenant's gateway origins")
	if len(origins) == 0 {
		return errs.New(errs.Forbidden, "this tenant has no gateway origins: set gateway_origins in its perimeter settings to use the agent gateway")
	}
	return errs.New(errs.Forbidden, "the client address is not in this tenant's gateway origins")
}

// serveMetered serves r with next and reports the call's usage when it arrived through the
// gateway with a verified signature.
func (d *dispatcher) serveMetered(w http.ResponseWriter, r *http.Request, next http.Handler) {
	sig, signed := reqsig.FromContext(r.Context())
	if d.guards.OnGatewayUsage == nil || !viaGateway(r.Context()) || !signed {
		next.ServeHTTP(w, r)
		return
	}
	start := time.Now()
	m := httpsnoop.CaptureMetrics(next, w, r)
	d.guards.OnGatewayUsage(GatewayUsage{
		Tenant: sig.TenantID, Agent: sig.AgentID, Route: r.Pattern,
		RequestID: middleware.RequestIDFromContext(r.Context()),
		Status:    m.Code, RequestBytes: max(r.ContentLength, 0), ResponseBytes: m.Written,
		Duration: m.Duration, StartedAt: start.UTC(),
	})
}
