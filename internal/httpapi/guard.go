package httpapi

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nops-kernel/nops/internal/clientip"
	"github.com/nops-kernel/nops/internal/control"
	"github.com/nops-kernel/nops/internal/degrade"
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

// edge is the perimeter middleware that runs before the dispatcher: it resolves the client
// address, classifies the request by the criticality matrix (internal/degrade: requests
// matching no operation are best effort), refuses what the active degraded modes do not serve
// (modes nil: none), applies the IP's in-flight gate (load shedding by class) and its rate
// limits, and writes the RateLimit headers.
func (g Guards) edge(errw errorWriter, matrix *degrade.Matrix, modes *degrade.Monitor) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ip := g.clientAddr(r)
			r = r.WithContext(context.WithValue(r.Context(), clientAddrKey{}, ip))
			_, row, _ := matrix.Lookup(r)
			class := row.Class
			r = r.WithContext(middleware.WithCriticality(r.Context(), class))
			if modes != nil {
				if err := modes.Admit(r.Context(), r, row); err != nil {
					errw.Write(w, r, err)
					return
				}
			}
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
	if viaMTLS(r.Context()) {
		return policy.KindSPIFFE
	}
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
		pctx, err := d.authorizePolicy(ctx, r, p, ip)
		if err != nil {
			release()
			return r, nil, err
		}
		if pctx != ctx {
			ctx = pctx
			r = r.WithContext(ctx)
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
	pending, err := v.Begin(ctx, r, body)
	if err != nil {
		if code := reqsig.RefusalCode(err); code != "" {
			d.audit(ctx, p.Tenant, control.ActionAuthenticate, resource, "request signature refused: "+code)
		}
		return ctx, err
	}
	// The nonce claim commits while the request goes on (see claimState); the result is not an
	// accepted signature until it has.
	c := &claimState{d: d, pending: pending, tenant: p.Tenant, resource: resource}
	ctx = context.WithValue(ctx, claimKey{}, c)
	res := pending.Result()
	if p.Tenant != "" && res.TenantID != p.Tenant {
		if err := c.settle(ctx); err != nil {
			return ctx, err
		}
		d.audit(ctx, p.Tenant, control.ActionAuthenticate, resource, "request signature refused: key of another tenant")
		return ctx, errs.New(errs.Unauthenticated, "the signing key %s does not belong to the caller's tenant", res.KeyID)
	}
	return reqsig.NewContext(withSigned(ctx), res), nil
}

// claimKey carries the claimState of a request whose signature passed its checks.
type claimKey struct{}

// claimState is the nonce claim of a request's signature, which commits (reqsig.Verifier.Begin)
// while the rest of the request runs: the tenant's gate, the policies, the rate limits, request
// validation and, for a safe method, the handler, whose response is held until the claim has
// committed. Without this the wait for the claim (a database commit, or a Redis round trip)
// came first, alone. What a refusal looks like does not change: every refusal after the
// signature's checks settles the claim first (settled), and a replayed nonce or a failed nonce
// store answers instead of the later refusal, as when the claim came before every later check.
// The policy denial's audit record waits for the claim too (authorizePolicy), so a replay is
// audited as a replay only. What does change: a replay now counts against the tenant, principal
// and route-class rate limits (only the per-IP limits counted it before); a rate-limit block's
// aggregated audit record may count it.
//
// Unsafe methods, and every request through the agent gateway (its usage record must be of
// accepted calls only), wait for the claim before their handler (serveClaimed).
type claimState struct {
	d        *dispatcher
	pending  *reqsig.Pending
	tenant   string
	resource string

	once sync.Once
	err  error
}

// settle waits for the claim and returns its refusal or failure; a refusal is audited once, as
// verifySignature audits the refusals of the signature's checks.
func (c *claimState) settle(ctx context.Context) error {
	c.once.Do(func() {
		_, c.err = c.pending.Wait()
		if code := reqsig.RefusalCode(c.err); code != "" {
			c.d.audit(ctx, c.tenant, control.ActionAuthenticate, c.resource, "request signature refused: "+code)
		}
	})
	return c.err
}

// settleClaim settles the nonce claim of the request of ctx, if it has one.
func settleClaim(ctx context.Context) error {
	if c, ok := ctx.Value(claimKey{}).(*claimState); ok {
		return c.settle(ctx)
	}
	return nil
}

// settled is the answer to a request refused with err after its signature's checks: the nonce
// claim's refusal or failure when it has one, else err.
func settled(r *http.Request, err error) error {
	if cerr := settleClaim(r.Context()); cerr != nil {
		return cerr
	}
	return err
}

// serveClaimed serves an admitted request with next once its signature's nonce claim, if any,
// allows: before the handler for unsafe methods and the gateway's calls; for GET and HEAD (the
// kernel's GET handlers only read) the handler runs meanwhile and its response is held until the
// claim has committed, then written, or discarded for the claim's refusal (heldWriter).
func (d *dispatcher) serveClaimed(w http.ResponseWriter, r *http.Request, next http.Handler) {
	c, ok := r.Context().Value(claimKey{}).(*claimState)
	if !ok {
		d.serveMetered(w, r, next)
		return
	}
	select {
	case <-c.pending.Done():
	default:
		if (r.Method == http.MethodGet || r.Method == http.MethodHead) && !viaGateway(r.Context()) {
			hw := &heldWriter{ResponseWriter: w, d: d, r: r, claim: c, before: maps.Clone(w.Header())}
			d.serveMetered(hw, r, next)
			hw.decide() // a handler that wrote nothing
			return
		}
	}
	if err := c.settle(r.Context()); err != nil {
		d.errw.Write(w, r, err)
		return
	}
	d.serveMetered(w, r, next)
}

// errClaimRefused is what the handler's writes get once its response was discarded.
var errClaimRefused = errors.New("response discarded: the request's signature was refused")

// heldWriter holds a handler's response until the request's nonce claim settles, at the first
// WriteHeader, Write, Flush or Hijack: then it lets the response through, or restores the
// header fields set before the handler, writes the claim's refusal instead, and discards the
// rest. Used by one request's handler goroutine.
type heldWriter struct {
	http.ResponseWriter
	d      *dispatcher
	r      *http.Request
	claim  *claimState
	before http.Header // the header fields as they were before the handler
	state  int8        // 0 undecided, 1 passed, -1 refused
}

func (h *heldWriter) decide() bool {
	if h.state == 0 {
		h.state = 1
		if err := h.claim.settle(h.r.Context()); err != nil {
			h.state = -1
			hdr := h.ResponseWriter.Header()
			clear(hdr)
			maps.Copy(hdr, h.before)
			h.d.errw.Write(h.ResponseWriter, h.r, err)
		}
	}
	return h.state > 0
}

func (h *heldWriter) WriteHeader(code int) {
	if h.decide() {
		h.ResponseWriter.WriteHeader(code)
	}
}

func (h *heldWriter) Write(b []byte) (int, error) {
	if !h.decide() {
		return 0, errClaimRefused
	}
	return h.ResponseWriter.Write(b)
}

func (h *heldWriter) Flush() { _ = h.FlushError() }

func (h *heldWriter) FlushError() error {
	if !h.decide() {
		return errClaimRefused
	}
	return http.NewResponseController(h.ResponseWriter).Flush()
}

func (h *heldWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if !h.decide() {
		return nil, nil, errClaimRefused
	}
	return http.NewResponseController(h.ResponseWriter).Hijack()
}

// Unwrap lets http.ResponseController reach the deadlines of the connection.
func (h *heldWriter) Unwrap() http.ResponseWriter { return h.ResponseWriter }

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
	digits := cur[i+3:]
	if j := strings.IndexFunc(digits, func(c rune) bool { return c < '0' || c > '9' }); j >= 0 {
		digits = digits[:j]
	}
	r, err := strconv.Atoi(digits)
	if err != nil {
		return true
	}
	return d.Remaining < r
}

// authorizePolicy evaluates the ABAC policies of the caller's tenant; a denial is audited with
// the policy that denied and answers 403. The context it returns carries the agent it read for
// the policies, if it read one (policyAgentFrom).
func (d *dispatcher) authorizePolicy(ctx context.Context, r *http.Request, p principal.Principal, ip netip.Addr) (context.Context, error) {
	if !d.guards.Policies.Applies(p.Tenant) {
		return ctx, nil
	}
	ctx, in, err := d.policyInput(ctx, r, p, ip)
	if err != nil {
		return ctx, err
	}
	dec := d.guards.Policies.Evaluate(ctx, in)
	if dec.Allowed {
		return ctx, nil
	}
	if err := settleClaim(ctx); err != nil {
		return ctx, err // a replay is refused and audited as such, not as the policy's denial
	}
	d.audit(ctx, p.Tenant, control.ActionAuthorize, r.Method+" "+r.URL.Path, dec.Reason)
	e := errs.New(errs.Forbidden, "%s", dec.Reason)
	return ctx, e
}

// policyInput is what the ABAC policies see of request r of p. The context it returns carries the
// agent it read for the policies, if it read one (policyAgentFrom).
func (d *dispatcher) policyInput(ctx context.Context, r *http.Request, p principal.Principal, ip netip.Addr) (context.Context, policy.Input, error) {
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
	in.Request.MTLSID = mtlsID(r)
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
				ctx = context.WithValue(ctx, policyAgentKey{}, &policyAgent{tenant: in.Resource.Tenant, agent: a})
			case !errs.Is(err, errs.NotFound) && !errs.Is(err, errs.Invalid):
				return ctx, in, fmt.Errorf("load the agent for policies: %w", err)
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
	return ctx, in, nil
}

type policyAgentKey struct{}

// policyAgent is the agent authorizePolicy read, in the tenant it read it from.
type policyAgent struct {
	tenant string
	agent  registry.Agent
}

// policyAgentFrom returns the agent the ABAC check of the request of ctx read, when it is agent
// id of tenantID: a handler serving that agent may use it instead of reading it again (the
// policies decided on this very version of it).
func policyAgentFrom(ctx context.Context, tenantID, id string) (registry.Agent, bool) {
	pa, ok := ctx.Value(policyAgentKey{}).(*policyAgent)
	if !ok || pa.tenant != tenantID || pa.agent.ID != id {
		return registry.Agent{}, false
	}
	return pa.agent, true
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
