package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/control"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/httpapi/gen"
	"github.com/nops-kernel/nops/internal/mcpserver"
	"github.com/nops-kernel/nops/internal/principal"
	"github.com/nops-kernel/nops/internal/ratelimit"
	"github.com/nops-kernel/nops/internal/rbac"
	"github.com/nops-kernel/nops/internal/registry"
)

// MCPServer serves /mcp and the tools' pinning; *mcpserver.Service implements it.
type MCPServer interface {
	http.Handler
	Tools(ctx context.Context, tenantID, only string) ([]mcpserver.Tool, error)
	Approve(ctx context.Context, tenantID, name, hash string) (mcpserver.Tool, error)
}

// resourceMetadataPath is where the protected-resource metadata is served (RFC 9728 §3).
const resourceMetadataPath = "/.well-known/oauth-protected-resource"

// invokePattern is the invoke route, whose policies and rate limits a capability tool's call obeys.
const invokePattern = "POST /v1/invoke/{capability}"

type baseURLKey struct{}

// withBaseURL records the kernel's base URL on each request: http.public_url, else the request's
// scheme and Host.
func withBaseURL(cfg config.Config) func(http.Handler) http.Handler {
	public := strings.TrimRight(cfg.HTTP.PublicURL, "/")
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			base := public
			if base == "" && r.Host != "" {
				scheme := "http"
				if r.TLS != nil {
					scheme = "https"
				}
				base = scheme + "://" + r.Host
			}
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), baseURLKey{}, base)))
		})
	}
}

func baseURLFrom(ctx context.Context) string {
	s, _ := ctx.Value(baseURLKey{}).(string)
	return s
}

// GetProtectedResourceMetadata serves the RFC 9728 metadata of the kernel as a resource server.
func (h *handlers) GetProtectedResourceMetadata(ctx context.Context, _ gen.GetProtectedResourceMetadataRequestObject) (gen.GetProtectedResourceMetadataResponseObject, error) {
	scopes := []string{rbac.ScopeAgentsRead, rbac.ScopeAgentsInvoke, rbac.ScopeEventsRead}
	doc := "https://github.com/nops-kernel/nops/blob/main/docs/mcp.md"
	return gen.GetProtectedResourceMetadata200JSONResponse(gen.ProtectedResourceMetadata{
		Resource:               baseURLFrom(ctx),
		AuthorizationServers:   []string{h.deps.Config.Auth.Issuer},
		BearerMethodsSupported: []gen.ProtectedResourceMetadataBearerMethodsSupported{"header"},
		ScopesSupported:        &scopes,
		ResourceName:           ptr("NOPS Kernel"),
		ResourceDocumentation:  &doc,
	}), nil
}

func (h *handlers) ListMCPTools(ctx context.Context, req gen.ListMCPToolsRequestObject) (gen.ListMCPToolsResponseObject, error) {
	if h.deps.MCP == nil {
		return nil, errs.New(errs.Unavailable, "the MCP server is not enabled on this kernel")
	}
	tenantID, err := h.tenantFor(ctx, req.Params.Tenant)
	if err != nil {
		return nil, err
	}
	tools, err := h.deps.MCP.Tools(ctx, tenantID, "")
	if err != nil {
		return nil, err
	}
	out := gen.MCPToolList{Items: make([]gen.MCPTool, 0, len(tools))}
	for _, t := range tools {
		out.Items = append(out.Items, mcpToolOut(t))
	}
	return gen.ListMCPTools200JSONResponse(out), nil
}

func (h *handlers) ApproveMCPTool(ctx context.Context, req gen.ApproveMCPToolRequestObject) (gen.ApproveMCPToolResponseObject, error) {
	if h.deps.MCP == nil {
		return nil, errs.New(errs.Unavailable, "the MCP server is not enabled on this kernel")
	}
	if !registry.ValidCapabilityName(req.Tool) {
		return nil, errs.Field("path.tool", "must be a capability name")
	}
	tenantID, err := h.tenantFor(ctx, req.Params.Tenant)
	if err != nil {
		return nil, err
	}
	t, err := h.deps.MCP.Approve(ctx, tenantID, req.Tool, req.Body.Hash)
	if err != nil {
		return nil, err
	}
	return gen.ApproveMCPTool200JSONResponse(mcpToolOut(t)), nil
}

func mcpToolOut(t mcpserver.Tool) gen.MCPTool {
	o := gen.MCPTool{
		Name: t.Name, Description: t.Description, Hash: t.Hash, Status: gen.MCPToolStatus(t.Status),
		McpCompatible: t.MCPCompatible(), Agents: t.Agents, ApprovedHash: optString(t.ApprovedHash),
	}
	if len(t.InputSchema) > 0 {
		o.InputSchema = json.RawMessage(t.InputSchema)
	}
	if o.Agents == nil {
		o.Agents = []string{}
	}
	return o
}

// mcpHandler serves POST /mcp: the admitted caller's tenant (a SUPER_ADMIN names it with
// ?tenant) and its gate go to the MCP server in the request's context.
func (d *dispatcher) mcpHandler(h *handlers) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h.deps.MCP == nil {
			d.errw.Write(w, r, errs.New(errs.Unavailable, "the MCP server is not enabled on this kernel"))
			return
		}
		p, ok := principal.FromContext(r.Context())
		if !ok {
			d.errw.Write(w, r, errs.New(errs.Internal, "no principal on an authenticated route"))
			return
		}
		var named *string
		if t := r.URL.Query().Get("tenant"); t != "" {
			named = &t
		}
		tenantID, err := h.tenantFor(r.Context(), named)
		if err != nil {
			d.errw.Write(w, r, err)
			return
		}
		// A tools/call waits for the agent as long as the call's deadline allows (a route may set up
		// to invoke.max_timeout), longer than the server's write timeout for ordinary answers.
		if err := http.NewResponseController(w).SetWriteDeadline(time.Now().Add(h.deps.Config.Invoke.MaxTimeout.D() + time.Second)); err != nil && !errors.Is(err, http.ErrNotSupported) {
			d.errw.logger.DebugContext(r.Context(), "extend the write deadline of /mcp", "error", err)
		}
		ctx := mcpserver.WithCaller(r.Context(), mcpserver.Caller{Tenant: tenantID, Gate: &mcpGate{d: d, r: r, p: p}})
		h.deps.MCP.ServeHTTP(w, r.WithContext(ctx))
	})
}

// mcpGate answers the MCP server's authorization questions for the caller of one /mcp request,
// as the dispatcher answers them for the API's own routes.
type mcpGate struct {
	d *dispatcher
	r *http.Request // the /mcp request
	p principal.Principal
}

// invokeRequest is r as if it were POST /v1/invoke/{capability}, for the policies and limits.
func (g *mcpGate) invokeRequest(ctx context.Context, capability string) *http.Request {
	r := g.r.Clone(ctx)
	r.Method = http.MethodPost
	r.Pattern = invokePattern
	r.URL.Path = "/v1/invoke/" + capability
	r.URL.RawPath = ""
	r.SetPathValue("capability", capability)
	return r
}

func (g *mcpGate) MayUse(ctx context.Context, scopes []string, capability string) bool {
	if !rbac.Authorize(g.p, scopes).Allowed {
		return false
	}
	pol := g.d.guards.Policies
	if capability == "" || pol == nil || !pol.Applies(g.p.Tenant) {
		return true
	}
	ip, _ := clientAddrFrom(ctx)
	_, in, err := g.d.policyInput(ctx, g.invokeRequest(ctx, capability), g.p, ip)
	if err != nil {
		return false
	}
	return pol.Evaluate(ctx, in).Allowed
}

func (g *mcpGate) AdmitCall(ctx context.Context, capability string) error {
	r := g.invokeRequest(ctx, capability)
	resource := r.Method + " " + r.URL.Path
	if dec := rbac.Authorize(g.p, []string{rbac.ScopeAgentsInvoke}); !dec.Allowed {
		g.d.audit(ctx, g.p.Tenant, control.ActionAuthorize, resource, dec.Reason)
		return errs.New(errs.Forbidden, "this tool needs the scope %s", rbac.ScopeAgentsInvoke)
	}
	ip, _ := clientAddrFrom(ctx)
	if g.d.guards.Policies != nil {
		if _, err := g.d.authorizePolicy(ctx, r, g.p, ip); err != nil {
			return err
		}
	}
	if g.d.guards.Limiter != nil {
		dec := g.d.guards.Limiter.CheckPrincipal(ctx, ratelimit.Request{IP: ip, Tenant: g.p.Tenant, Principal: g.p.Subject,
			Route: invokePattern, RouteClass: routeClass(invokePattern)})
		if !dec.Allowed {
			return dec.Refusal()
		}
	}
	return nil
}
