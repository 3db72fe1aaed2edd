// Package mcpserver is the kernel's MCP server (Model Context Protocol, Streamable HTTP transport,
// stateless): the capabilities the caller's tenant's agents offer become tools, whose calls go
// through the invoke engine like POST /v1/invoke/{capability}, beside a few read-only kernel
// tools. A tool's definition comes from an agent and is untrusted: it is listed and callable only
// while its hash matches the one an administrator approved (internal/toolpin). Each request is
// served from the store and the registry alone, so any replica serves any request.
//
// The HTTP edge (internal/httpapi) authenticates the request and hands the handler, through the
// request's context, the caller's tenant and a Gate that answers the RBAC and ABAC questions the
// tools raise (WithCaller). See docs/mcp.md.
package mcpserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/nops-kernel/nops/internal/control"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/invoke"
	"github.com/nops-kernel/nops/internal/middleware"
	"github.com/nops-kernel/nops/internal/principal"
	"github.com/nops-kernel/nops/internal/registry"
	"github.com/nops-kernel/nops/internal/toolpin"
)

// Audit actions of the MCP server. Stable strings: auditors filter on them.
const (
	ActionToolCall     = "mcp.tool.call"     // a capability tool was called (allowed: the call ran)
	ActionToolApprove  = "mcp.tool.approve"  // an administrator approved a tool definition
	ActionToolWithheld = "mcp.tool.withheld" // an approved tool's definition changed: withheld
)

// Statuses of a tool's pinning.
const (
	StatusApproved = "approved" // the current definition is the approved one: listed and callable
	StatusPending  = "pending"  // never approved: withheld
	StatusChanged  = "changed"  // approved, but the definition changed since: withheld
)

// Agents reads the registry; *registry.Service implements it.
type Agents interface {
	List(ctx context.Context, tenantID string, f registry.Filter) (registry.Page, error)
	Get(ctx context.Context, tenantID, id string) (registry.Agent, error)
}

// Invoker runs a call and buffers the agent's answer; *invoke.Service implements it.
type Invoker interface {
	Do(ctx context.Context, req invoke.Request) (invoke.Response, error)
}

// Auditor appends audit records; *control.Control implements it.
type Auditor interface {
	RecordAction(ctx context.Context, a control.Action) error
}

// DeadLetters counts a tenant's dead letters; bus.Bus implements it.
type DeadLetters interface {
	CountDeadLetters(ctx context.Context, tenant string) (int64, error)
}

// Deps are the Service's collaborators. Agents, Invoke, Approvals and Audit are required.
type Deps struct {
	Agents    Agents
	Invoke    Invoker
	Approvals toolpin.Store
	Audit     Auditor
	DLQ       DeadLetters // nil: no kernel.dlqStats tool
	Logger    *slog.Logger
	Version   string // the kernel's version, in the server's implementation info
	Now       func() time.Time
	// MaxBodyBytes bounds a request's body (the kernel's http.max_body_bytes); 0: the SDK's default.
	MaxBodyBytes int64
}

// Gate answers the authorization questions of one request's caller; the HTTP edge implements it.
type Gate interface {
	// MayUse reports, without side effects, whether the caller holds scopes (RBAC) and, when
	// capability is not "", whether the ABAC policies let it invoke that capability.
	MayUse(ctx context.Context, scopes []string, capability string) bool
	// AdmitCall decides a call of capability just before it runs: the ABAC policies (a denial is
	// audited) and the rate limits of the invoke route. The error is the refusal.
	AdmitCall(ctx context.Context, capability string) error
}

// Caller is who the request of a context acts for.
type Caller struct {
	Tenant string // the tenant whose tools are served
	Gate   Gate
}

type callerKey struct{}

// WithCaller returns ctx carrying c, for the Service's handler.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

func callerFrom(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok && c.Gate != nil && c.Tenant != ""
}

// Service serves /mcp and reports the tools' pinning to administrators. Safe for concurrent use.
type Service struct {
	deps Deps
	h    *mcp.StreamableHTTPHandler
	impl *mcp.Implementation
}

// New returns a Service.
func New(deps Deps) (*Service, error) {
	if deps.Agents == nil || deps.Invoke == nil || deps.Approvals == nil || deps.Audit == nil {
		return nil, errors.New("mcpserver: agents, invoke, approvals and audit are required")
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	s := &Service{deps: deps, impl: &mcp.Implementation{Name: "nops-kernel", Title: "NOPS Kernel", Version: deps.Version}}
	s.h = mcp.NewStreamableHTTPHandler(func(r *http.Request) *mcp.Server {
		srv, _ := r.Context().Value(serverKey{}).(*mcp.Server)
		return srv
	}, &mcp.StreamableHTTPOptions{
		// Any replica serves any request: no session, nothing kept between requests.
		Stateless: true,
		// One JSON answer per request: nothing streams (no progress or list-changed notifications
		// are sent in stateless mode anyway).
		JSONResponse: true,
		// Every request is authenticated by the kernel before it gets here; a kernel behind a local
		// reverse proxy sees loopback peers with public Host names.
		DisableLocalhostProtection: true,
		MaxRequestBodyBytes:        deps.MaxBodyBytes,
		Logger:                     deps.Logger.With(slog.String("component", "mcp")),
	})
	return s, nil
}

type serverKey struct{}

// ServeHTTP serves one MCP request of the caller in r's context (WithCaller).
func (s *Service) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	caller, ok := callerFrom(r.Context())
	if !ok {
		http.Error(w, "mcp: no authenticated caller", http.StatusInternalServerError)
		return
	}
	scope, err := peek(r)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "read the request body", http.StatusBadRequest)
		return
	}
	srv, err := s.server(r.Context(), caller, scope)
	if err != nil {
		s.deps.Logger.ErrorContext(r.Context(), "mcp: build the tool list", "tenant", caller.Tenant, "request_id", middleware.RequestIDFromContext(r.Context()), "error", err)
		http.Error(w, "the tool list is unavailable now", http.StatusServiceUnavailable)
		return
	}
	s.h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), serverKey{}, srv)))
}

// toolScope is which tools a request needs: none (initialize, ping, notifications), one (a single
// tools/call) or all.
type toolScope struct {
	all  bool
	only string
}

// peek reads which tools the request's JSON-RPC messages need, and puts the body back.
func peek(r *http.Request) (toolScope, error) {
	if r.Body == nil {
		return toolScope{}, nil
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return toolScope{}, err
	}
	_ = r.Body.Close()
	r.Body = io.NopCloser(bytes.NewReader(body))
	var msg struct {
		Method string `json:"method"`
		Params struct {
			Name string `json:"name"`
		} `json:"params"`
	}
	if err := json.Unmarshal(body, &msg); err != nil {
		// A batch, or not JSON-RPC at all (which the SDK refuses): serve every tool.
		return toolScope{all: true}, nil
	}
	switch msg.Method {
	case "tools/call":
		if msg.Params.Name == "" {
			return toolScope{all: true}, nil
		}
		return toolScope{only: msg.Params.Name}, nil
	case "tools/list":
		return toolScope{all: true}, nil
	}
	return toolScope{}, nil
}

// server builds the MCP server of one request: the tools the caller may see, each calling
// through the caller's context.
func (s *Service) server(ctx context.Context, c Caller, scope toolScope) (*mcp.Server, error) {
	srv := mcp.NewServer(s.impl, &mcp.ServerOptions{
		Capabilities: &mcp.ServerCapabilities{Tools: &mcp.ToolCapabilities{}},
		Instructions: "Tools of the agents of your NOPS tenant, called through the kernel (routing, policies, rate limits, audit), and read-only kernel tools.",
		Logger:       s.deps.Logger,
	})
	if !scope.all && scope.only == "" {
		return srv, nil
	}
	for _, kt := range s.kernelTools() {
		if scope.only != "" && scope.only != kt.tool.Name {
			continue
		}
		if c.Gate.MayUse(ctx, kt.scopes, "") {
			srv.AddTool(kt.tool, kt.handler(ctx, c.Tenant))
		}
	}
	if scope.only != "" && !registry.ValidCapabilityName(scope.only) {
		return srv, nil // a kernel tool, or unknown
	}
	tools, err := s.Tools(ctx, c.Tenant, scope.only)
	if err != nil {
		return nil, err
	}
	for _, t := range tools {
		if t.Status != StatusApproved || t.inputSchema == nil || !c.Gate.MayUse(ctx, invokeScopes, t.Name) {
			continue
		}
		srv.AddTool(&mcp.Tool{Name: t.Name, Description: t.Description, InputSchema: t.inputSchema}, s.callCapability(ctx, c, t.Name))
	}
	return srv, nil
}

// invokeScopes are the scopes of POST /v1/invoke/{capability}, which a capability tool needs.
var invokeScopes = []string{"agents:invoke"}

// callCapability returns the handler of a capability tool. It calls in reqCtx — the HTTP
// request's context, which carries the caller, its request id and the trace — so that the call
// is the caller's as a POST /v1/invoke is.
func (s *Service) callCapability(reqCtx context.Context, c Caller, capability string) mcp.ToolHandler {
	return func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		if err := c.Gate.AdmitCall(reqCtx, capability); err != nil {
			return toolError(err), nil
		}
		args := json.RawMessage(req.Params.Arguments)
		if len(bytes.TrimSpace(args)) == 0 || string(args) == "null" {
			args = json.RawMessage("{}")
		}
		id := invoke.NewInvocationID()
		resp, err := s.deps.Invoke.Do(reqCtx, invoke.Request{
			TenantID:     c.Tenant,
			Capability:   capability,
			InvocationID: id,
			RequestID:    middleware.RequestIDFromContext(reqCtx),
			// A fresh header: nothing of the MCP request (its credentials above all) reaches the agent.
			Header: http.Header{"Content-Type": {"application/json"}},
			Body:   args,
		})
		reason := ""
		var res *mcp.CallToolResult
		if err != nil {
			reason = fmt.Sprintf("invocation %s refused or failed: %s", id, errText(err))
			res = toolError(err)
		} else {
			reason = fmt.Sprintf("invocation %s answered %d by agent %s", id, resp.Status, resp.AgentID)
			res = toolResult(resp)
		}
		if aerr := s.deps.Audit.RecordAction(reqCtx, control.Action{
			Tenant: c.Tenant, Action: ActionToolCall, Resource: "mcp/tools/" + capability, Reason: reason,
		}); aerr != nil {
			s.deps.Logger.ErrorContext(reqCtx, "audit an MCP tool call", "tool", capability, "error", aerr)
		}
		return res, nil
	}
}

// toolResult renders an agent's answer: its body as text, and as structured content when it is a
// JSON object; an answer of 400 or more is an error result.
func toolResult(resp invoke.Response) *mcp.CallToolResult {
	res := &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: string(resp.Body)}}, IsError: resp.Status >= 400}
	if bytes.HasPrefix(bytes.TrimSpace(resp.Body), []byte("{")) && json.Valid(resp.Body) {
		res.StructuredContent = json.RawMessage(resp.Body)
	}
	return res
}

// toolError is the result of a call the kernel refused or that failed: the problem's text.
func toolError(err error) *mcp.CallToolResult {
	return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: errText(err)}}}
}

// errText is what a client may read of err: a kernel error's code, message and fields, never
// the internals of another error.
func errText(err error) string {
	e := errs.As(err)
	if e == nil || e.Code == errs.Internal {
		return "internal error"
	}
	msg := string(e.Code) + ": " + e.Message
	for _, f := range e.Fields {
		msg += "; " + f.Name + " " + f.Reason
	}
	return msg
}

// principalSubject is the subject of the caller of ctx, "" without one.
func principalSubject(ctx context.Context) string {
	if p, ok := principal.FromContext(ctx); ok {
		return p.Subject
	}
	return ""
}

// sortTools orders tools by name.
func sortTools(ts []Tool) {
	slices.SortFunc(ts, func(a, b Tool) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
}
