package mcpserver

import (
	"context"
	"encoding/json"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/registry"
)

// The kernel's own tools. Their names have upper-case letters, which capability names never
// have, so no agent can offer a tool of the same name.
const (
	ToolListAgents  = "kernel.listAgents"
	ToolAgentHealth = "kernel.agentHealth"
	ToolDLQStats    = "kernel.dlqStats"
)

// kernelTool is a read-only tool the kernel itself serves.
type kernelTool struct {
	tool    *mcp.Tool
	scopes  []string // what the caller needs, as for the equivalent API operation
	handler func(ctx context.Context, tenant string) mcp.ToolHandler
}

func readOnly() *mcp.ToolAnnotations {
	return &mcp.ToolAnnotations{ReadOnlyHint: true, OpenWorldHint: new(false)}
}

// kernelTools lists the kernel tools this Service serves.
func (s *Service) kernelTools() []kernelTool {
	ts := []kernelTool{
		{
			tool: &mcp.Tool{
				Name:        ToolListAgents,
				Description: "List the agents of your tenant: id, name, version, status (healthy, stale, zombie), capabilities and last heartbeat.",
				InputSchema: json.RawMessage(`{"type":"object","properties":{"status":{"type":"string","enum":["healthy","stale","zombie"],"description":"Only agents in this status."}},"additionalProperties":false}`),
				Annotations: readOnly(),
			},
			scopes:  []string{"agents:read"},
			handler: s.listAgents,
		},
		{
			tool: &mcp.Tool{
				Name:        ToolAgentHealth,
				Description: "Health of one agent of your tenant: status, last heartbeat and the load it last reported.",
				InputSchema: json.RawMessage(`{"type":"object","required":["agent_id"],"properties":{"agent_id":{"type":"string","maxLength":64}},"additionalProperties":false}`),
				Annotations: readOnly(),
			},
			scopes:  []string{"agents:read"},
			handler: s.agentHealth,
		},
	}
	if s.deps.DLQ != nil {
		ts = append(ts, kernelTool{
			tool: &mcp.Tool{
				Name:        ToolDLQStats,
				Description: "How many events of your tenant are dead-lettered (consumers gave up on them).",
				InputSchema: json.RawMessage(`{"type":"object","additionalProperties":false}`),
				Annotations: readOnly(),
			},
			scopes:  []string{"events:read"},
			handler: s.dlqStats,
		})
	}
	return ts
}

type agentOut struct {
	ID           string         `json:"id"`
	Name         string         `json:"name"`
	Version      string         `json:"version"`
	Status       string         `json:"status"`
	Capabilities []string       `json:"capabilities"`
	HeartbeatAt  time.Time      `json:"heartbeat_at"`
	Load         *registry.Load `json:"load,omitempty"`
}

func agentView(a registry.Agent, withLoad bool) agentOut {
	o := agentOut{ID: a.ID, Name: a.Name, Version: a.Version, Status: string(a.Status), HeartbeatAt: a.HeartbeatAt.UTC(), Capabilities: []string{}}
	for _, c := range a.Capabilities {
		o.Capabilities = append(o.Capabilities, c.Name)
	}
	if withLoad {
		l := a.Load
		o.Load = &l
	}
	return o
}

func (s *Service) listAgents(reqCtx context.Context, tenant string) mcp.ToolHandler {
	return func(_ context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		var in struct {
			Status string `json:"status"`
		}
		if err := unmarshalArgs(req, &in); err != nil {
			return toolError(err), nil
		}
		f := registry.Filter{Limit: registry.MaxLimit}
		if in.Status != "" {
			f.Status = []registry.Status{registry.Status(in.Status)}
		}
		out := struct {
			Agents []agentOut `json:"agents"`
		}{Agents: []agentOut{}}
		for {
			page, err := s.deps.Agents.List(reqCtx, tenant, f)
			if err != nil {
				return toolError(err), nil
			}
			for _, a := range page.Agents {
				out.Agents = append(out.Agents, agentView(a, false))
			}
			if page.NextCursor == "" {
				break
			}
			f.Cursor = page.NextCursor
		}
		return jsonResult(out), nil
	}
}

func (s *Service) agentHealth(reqCtx context.Context, tenant string) mcp.ToolHandler {
	return func(_ context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		var in struct {
			AgentID string `json:"agent_id"`
		}
		if err := unmarshalArgs(req, &in); err != nil {
			return toolError(err), nil
		}
		a, err := s.deps.Agents.Get(reqCtx, tenant, in.AgentID)
		if err != nil {
			return toolError(err), nil
		}
		return jsonResult(agentView(a, true)), nil
	}
}

func (s *Service) dlqStats(reqCtx context.Context, tenant string) mcp.ToolHandler {
	return func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		n, err := s.deps.DLQ.CountDeadLetters(reqCtx, tenant)
		if err != nil {
			return toolError(err), nil
		}
		return jsonResult(struct {
			DeadLetters int64 `json:"dead_letters"`
		}{n}), nil
	}
}

// unmarshalArgs decodes a kernel tool's arguments; the SDK validated nothing (the tools are added
// with Server.AddTool), so the schema's constraints that matter are checked by the handlers'
// callees (an unknown status or agent id is simply not found).
func unmarshalArgs(req *mcp.CallToolRequest, v any) error {
	if len(req.Params.Arguments) == 0 {
		return nil
	}
	if err := json.Unmarshal(req.Params.Arguments, v); err != nil {
		return invalidArgs(err)
	}
	return nil
}

// jsonResult is a kernel tool's answer: v as JSON text and as structured content.
func jsonResult(v any) *mcp.CallToolResult {
	b, err := json.Marshal(v)
	if err != nil {
		return toolError(err)
	}
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: string(b)}}, StructuredContent: json.RawMessage(b)}
}

func invalidArgs(err error) error {
	e := errs.Field("params.arguments", "must be a JSON object matching the tool's input schema")
	e.Err = err
	return e
}
