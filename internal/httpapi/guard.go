package httpapi

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/nops-kernel/nops/internal/clientip"
	"github.com/nops-kernel/nops/internal/control"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/middleware"
	"github.com/nops-kernel/nops/internal/policy"
	"github.com/nops-kernel/nops/internal/principal"
	"github.com/nops-kernel/nops/internal/ratelimit"
	"github.com/nops-kernel/nops/internal/registry"
	"github.com/nops-kernel/nops/internal/reqsig"
)

// Guards are the perimeter's request checks beyond authentication and RBAC; the kernel builds
// them (internal/kernel/perimeter.go). A nil field turns its check off.
//
// The order on a request: the in-flight gate of the client IP (load shedding by criticality)
// and the rate limits of the client IP run before the route is even matched, so floods of
// unknown paths and credential guessing are cut as cheaply as possible; once the dispatcher has
// authenticated the caller and RBAC allowed the operation, the tenant's in-flight gate, the
// ABAC policies and the rate limits of the tenant, the principal and the route class apply.
type Guards struct {
	ClientIP   *clientip.Resolver // the client address (trusted proxies); nil: the direct peer
	Limiter    *ratelimit.Limiter
	Policies   *policy.Engine
	IPGate     *middleware.Gate // in flight per client IP and in total, with load shedding
	TenantGate *middleware.Gate // in flight per tenant
	HSTSMaxAge time.Duration    // Strict-Transport-Security on HTTPS responses; 0: none
	// Signatures verifies RFC 9421 request signatures: of every request that carries one, and
	// of every request of a tenant that RequireSigned says requires them.
	Signatures    *reqsig.Verifier
	RequireSigned func(tenant string) bool // nil: no tenant requires signatures

	// The Zero Agent Gateway (gateway.go): the networks a tenant's gateway clients may come
	// from, and where the usage of each accepted gateway call goes.
	GatewayOrigins func(tenant string) []netip.Prefix
	OnGatewayUsage func(GatewayUsage)
}

// clientAddr is the client address of r as the perimeter believes it.
func (g Guards) clientAddr(r *http.Request) netip.Addr {
	if g.ClientIP != nil {
		return g.ClientIP.ClientIP(r)
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

type clientAddrKey struct{}

// clientAddrFrom returns the client address the edge resolved for the request of ctx.
func clientAddrFrom(ctx context.Context) (netip.Addr, bool) {
	a, ok := ctx.Value(clientAddrKey{}).(netip.Addr)
	return a, ok
}

// infraPath reports whether path is one of the probes and scrapes that operators' systems call
// on a schedule: critical, never rate limited.
func infraPath(path string) bool {
	switch path {
	case "/health", "/_readyz", "/healthz", "/metrics":
		return true
	}
	return false
}

// criticalityOf classifies a request for load shedding before its route is matched:
// probes and heartbeats are critical (an agent missing heartbeats would be taken out of
// routing), authentication and changes essential, reads and bulk event work best effort.
func criticalityOf(r *http.Request) middleware.Criticality {
	p := r.URL.Path
	switch {
	case infraPath(p), strings.HasSuffix(p, "/heartbeat") && strings.HasPrefix(p, "/v1/agents/"):
		return middleware.Critical
	case strings.HasPrefix(p, "/v1/auth/"):
		return middleware.Essential
	case strings.HasPrefix(p, "/v1/events/"), strings.HasPrefix(p, "/v1/dlq"):
		return middleware.BestEffort
	case r.Method == http.MethodGet || r.Method == http.MethodHead:
		return middleware.BestEffort
	}
	return middleware.Essential
}

// edge is the perimeter middleware that runs before the dispatcher: it resolves the client
// address, applies the IP's in-flight gate and its rate limits, and writes the RateLimit
// headers.
func (g Guards) edge(errw errorWriter) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ip := g.clientAddr(r)
			r = r.WithContext(context.WithValue(r.Context(), clientAddrKey{}, ip))
			class := criticalityOf(r)
			r = r.WithContext(middleware.WithCriticality(r.Context(), class))
			if g.IPGate != nil {
				key := ""
				if ip.IsValid() {
					key = middleware.AddrKey(ip)
				}
				release, err := g.IPGate.Acquire(r.Context(), key, class)
				if err != nil {
					errw.Write(w, r, err)
					return
				}
				defer release()
			}
			if g.Limiter != nil && !infraPath(r.URL.Path) {
				d := g.Limiter.CheckIP(r.Context(), ratelimit.Request{IP: ip})
				writeRateLimit(w, d)
				if !d.Allowed {
					errw.Write(w, r, d.Refusal())
					return
				}
			}
			next.ServeHTTP(w, r)
		})
	}
}

// writeRateLimit sets the IETF RateLimit and RateLimit-Policy headers of d, when a rule applied.
func writeRateLimit(w http.ResponseWriter, d ratelimit.Decision) {
	if d.Rule == "" {
		return
	}
	rl, policyHdr := ratelimit.Headers(d)
	if rl != "" {
		w.Header().Set("RateLimit", rl)
	}
	if policyHdr != "" {
		w.Header().Set("RateLimit-Policy", policyHdr)
	}
}

// routeClass is the rate-limit class of an operation (config.RateLimitClasses).
func routeClass(pattern string) string {
	method, path, _ := strings.Cut(pattern, " ")
	switch {
	case strings.HasPrefix(path, "/v1/auth/"):
		return "auth"
	case strings.HasPrefix(path, "/v1/tenants"), strings.HasPrefix(path, "/v1/system/"), strings.HasPrefix(path, "/v1/rate-limits"):
		return "admin"
	case method == http.MethodGet || method == http.MethodHead:
		return "read"
	}
	return "write"
}

// actionOf names an operation for policies: <collection>.<verb>, the verb being list or read
// (GET of a collection or an item), create, update, delete, or the last literal segment of a
// sub-action path ("POST /v1/agents/{agent_id}/heartbeat" → "agents.heartbeat").
func actionOf(pattern string) (action, resourceType string) {
	method, path, _ := strings.Cut(pattern, " ")
	segs := strings.Split(strings.TrimPrefix(strings.TrimPrefix(path, "/"), "v1/"), "/")
	collection := segs[0]
	last := segs[len(segs)-1]
	item := strings.HasPrefix(last, "{")
	var verb string
	switch {
	case len(segs) > 1 && !item && !strings.HasPrefix(segs[1], "{"):
		verb = strings.Join(segs[1:], ".") // /v1/events/replay, /v1/audit/proof/inclusion
	case len(segs) > 2 && !item:
		verb = last
	case method == http.MethodGet || method == http.MethodHead:
		verb = "list"
		if item {
			verb = "read"
		}
	case method == http.MethodPost:
		verb = "create"
	case method == http.MethodPut || method == http.MethodPatch:
		verb = "update"
	case method == http.MethodDelete:
		verb = "delete"
	default:
		verb = strings.ToLower(method)
	}
	return collection + "." + verb, singular(collection)
}

// singular is the resource type of a collection: "api-keys" → "api_key".
func singular(collection string) string {
	t := strings.ReplaceAll(collection, "-", "_")
	switch {
	case strings.HasSuffix(t, "ies"):
		return strings.TrimSuffix(t, "ies") + "y"
	case strings.HasSuffix(t, "s"):
		return strings.TrimSuffix(t, "s")
	}
	return t
}

// principalKind is how the caller authenticated, for policies.
func principalKind(r *http.Request) string {
	if r.Header.Get("X-API-Key") != "" {
		return policy.KindAPIKey
	}
	return policy.KindUser
}

// guard applies the checks that need the authenticated principal and a valid request: the
// tenant's in-flight gate, the ABAC policies, and the rate limits of the tenant, principal and
// route class. (The signature and the gateway's checks run earlier, in admit, on the request as
// it arrived.) It returns the request to serve and the release of the tenant's gate slot, to call
// when the request is done.
func (d *dispatcher) guard(w http.ResponseWriter, r *http.Request, p principal.Principal) (*http.Request, func(), error) {
	ctx := r.Context()
	release := func() {}
	if d.guards.TenantGate != nil && p.Tenant != "" {
		class, _ := middleware.CriticalityFromContext(ctx)
		rel, err := d.guards.TenantGate.Acquire(ctx, p.Tenant, class)
		if err != nil {
			return r, nil, err
		}
		release = rel
	}
	ip, _ := clientAddrFrom(ctx)
	if d.guards.Policies != nil {
		if err := d.authorizePolicy(ctx, r, p, ip); err != nil {
			release()
			return r, nil, err
		}
	}
	if d.guards.Limiter != nil {
		dec := d.guards.Limiter.CheckPrincipal(ctx, ratelimit.Request{IP: ip, Tenant: p.Tenant, Principal: p.Subject,
			Route: r.Pattern, RouteClass: routeClass(r.Pattern)})
		if dec.Rule != "" && (!dec.Allowed || lowerRemaining(w, dec)) {
			writeRateLimit(w, dec)
		}
		if !dec.Allowed {
			release()
			return r, nil, dec.Refusal()
		}
	}
	return r, release, nil
}

// verifySignature checks the request's RFC 9421 signature when it carries one or its tenant
// requires one. The signing key must belong to the caller's tenant. A refusal is audited (with
// the check that failed, never key material) and answers 401.
func (d *dispatcher) verifySignature(r *http.Request, p principal.Principal) (context.Context, error) {
	ctx := r.Context()
	v := d.guards.Signatures
	if v == nil {
		return ctx, nil
	}
	signed := len(r.Header.Values("Signature-Input")) > 0 || len(r.Header.Values("Signature")) > 0
	gateway := viaGateway(ctx)
	required := gateway || (p.Tenant != "" && d.guards.RequireSigned != nil && d.guards.RequireSigned(p.Tenant))
	if !signed && !required {
		return ctx, nil
	}
	resource := r.Method + " " + r.URL.Path
	if !signed {
		d.audit(ctx, p.Tenant, control.ActionAuthenticate, resource, "request signature missing on a route that requires one")
		if gateway {
			return ctx, errs.New(errs.Unauthenticated, "the agent gateway requires RFC 9421 signatures on every request: Signature-Input and Signature are missing")
		}
		return ctx, errs.New(errs.Unauthenticated, "this tenant requires RFC 9421 signatures on every request: Signature-Input and Signature are missing")
	}
	var body []byte
	if r.Body != nil && r.Body != http.NoBody {
		var err error
		if body, err = io.ReadAll(r.Body); err != nil {
			return ctx, err
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	res, err := v.Verify(ctx, r, body)
	if err != nil {
		if code := reqsig.RefusalCode(err); code != "" {
			d.audit(ctx, p.Tenant, control.ActionAuthenticate, resource, "request signature refused: "+code)
		}
		return ctx, err
	}
	if p.Tenant != "" && res.TenantID != p.Tenant {
		d.audit(ctx, p.Tenant, control.ActionAuthenticate, resource, "request signature refused: key of another tenant")
		return ctx, errs.New(errs.Unauthenticated, "the signing key %s does not belong to the caller's tenant", res.KeyID)
	}
	return reqsig.NewContext(withSigned(ctx), res), nil
}

// lowerRemaining reports whether d leaves fewer requests than the RateLimit header already set
// by the edge's check: the header shows the tightest limit.
func lowerRemaining(w http.ResponseWriter, d ratelimit.Decision) bool {
	cur := w.Header().Get("RateLimit")
	if cur == "" {
		return true
	}
	i := strings.Index(cur, ";r=")
	if i < 0 {
		return true
	}
	var r int
	if _, err := fmt.Sscanf(cur[i+3:], "%d", &r); err != nil {
		return true
	}
	return d.Remaining < r
}

// authorizePolicy evaluates the ABAC policies of the caller's tenant; a denial is audited with
// the policy that denied and answers 403.
func (d *dispatcher) authorizePolicy(ctx context.Context, r *http.Request, p principal.Principal, ip netip.Addr) error {
	if !d.guards.Policies.Applies(p.Tenant) {
		return nil
	}
	action, rtype := actionOf(r.Pattern)
	in := policy.Input{
		Principal:  policy.PrincipalOf(p, principalKind(r), nil),
		Resource:   policy.Resource{Tenant: p.Tenant, Type: rtype},
		Action:     action,
		Capability: r.PathValue("capability"),
		Request:    policy.Request{Time: d.now().UTC(), Method: r.Method, Path: r.URL.Path},
	}
	if ip.IsValid() {
		in.Request.IP = ip.String()
	}
	if t := r.URL.Query().Get("tenant"); t != "" && p.Tenant == "" {
		in.Resource.Tenant = t
	}
	if id := r.PathValue("agent_id"); id != "" {
		in.Resource.ID = id
		// The agent's labels and criticality, read only when a policy looks at them; a missing
		// agent is the handler's 404 to give.
		if d.guards.Policies.NeedsResourceAttributes(p.Tenant) {
			a, err := d.agents.Get(ctx, in.Resource.Tenant, id)
			switch {
			case err == nil:
				in.Resource.Labels = a.Labels
				in.Resource.Criticality = string(a.Criticality)
			case !errs.Is(err, errs.NotFound) && !errs.Is(err, errs.Invalid):
				return fmt.Errorf("load the agent for policies: %w", err)
			}
		}
	} else {
		for _, name := range []string{"tenant_id", "key_id", "policy_id", "override_id"} {
			if v := r.PathValue(name); v != "" {
				in.Resource.ID = v
				break
			}
		}
	}
	if sig, ok := signedFrom(ctx); ok {
		in.Request.Signed = sig
	}
	dec := d.guards.Policies.Evaluate(ctx, in)
	if dec.Allowed {
		return nil
	}
	d.audit(ctx, p.Tenant, control.ActionAuthorize, r.Method+" "+r.URL.Path, dec.Reason)
	e := errs.New(errs.Forbidden, "%s", dec.Reason)
	return e
}

// AgentReader reads an agent's attributes for policies; *registry.Service implements it.
type AgentReader interface {
	Get(ctx context.Context, tenantID, id string) (registry.Agent, error)
}

type signedKey struct{}

// withSigned records that the request's RFC 9421 signature was verified.
func withSigned(ctx context.Context) context.Context {
	return context.WithValue(ctx, signedKey{}, true)
}

func signedFrom(ctx context.Context) (bool, bool) {
	v, ok := ctx.Value(signedKey{}).(bool)
	return v, ok
}
