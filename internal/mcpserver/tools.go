package mcpserver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/nops-kernel/nops/internal/control"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/registry"
	"github.com/nops-kernel/nops/internal/toolpin"
)

// Tool is a capability of a tenant's live agents as an MCP tool, with its pinning.
type Tool struct {
	Name         string
	Description  string
	InputSchema  json.RawMessage // as the agent declared it; empty: none
	Hash         string          // toolpin.Hash of the current definition
	ApprovedHash string          // "" when never approved
	Status       string          // StatusApproved, StatusPending or StatusChanged
	Agents       []string        // ids of the live agents offering it, sorted
	// inputSchema is the schema MCP clients get ({"type":"object"} for none); nil when the
	// declared schema is not an object schema, which MCP cannot carry: such a tool is not served.
	inputSchema json.RawMessage
}

// MCPCompatible reports whether the tool can be served over MCP (its input is a JSON object).
func (t Tool) MCPCompatible() bool { return t.inputSchema != nil }

// Tools returns the capabilities of the tenant's live (healthy or stale) agents as tools, sorted
// by name, each with its pinning status; only "" or a capability name restricts it to that one.
// Where the agents offering a capability declare different definitions, the tool's definition is
// one that differs from the approved one (so it is withheld until that one is approved, and the
// other agents' definitions again after it). A changed definition is recorded in the audit trail
// as withheld, once per definition.
func (s *Service) Tools(ctx context.Context, tenantID, only string) ([]Tool, error) {
	byName := map[string][]defOf{}
	f := registry.Filter{Capability: only, Status: []registry.Status{registry.StatusHealthy, registry.StatusStale}, Limit: registry.MaxLimit}
	for {
		page, err := s.deps.Agents.List(ctx, tenantID, f)
		if err != nil {
			return nil, fmt.Errorf("agents of tenant %s: %w", tenantID, err)
		}
		for _, a := range page.Agents {
			for _, c := range a.Capabilities {
				if only != "" && c.Name != only {
					continue
				}
				h, err := toolpin.Hash(toolpin.Definition{Name: c.Name, Description: c.Description, InputSchema: c.InputSchema})
				if err != nil {
					return nil, err
				}
				byName[c.Name] = append(byName[c.Name], defOf{agent: a.ID, c: c, hash: h})
			}
		}
		if page.NextCursor == "" {
			break
		}
		f.Cursor = page.NextCursor
	}
	approvals := map[string]toolpin.Approval{}
	if only != "" {
		a, err := s.deps.Approvals.ToolApproval(ctx, tenantID, only)
		switch {
		case err == nil:
			approvals[only] = a
		case !errs.Is(err, errs.NotFound):
			return nil, fmt.Errorf("approval of tool %s: %w", only, err)
		}
	} else {
		all, err := s.deps.Approvals.ToolApprovals(ctx, tenantID)
		if err != nil {
			return nil, fmt.Errorf("tool approvals: %w", err)
		}
		for _, a := range all {
			approvals[a.Tool] = a
		}
	}
	out := make([]Tool, 0, len(byName))
	for name, defs := range byName {
		slices.SortFunc(defs, func(a, b defOf) int { return cmpString(a.agent, b.agent) })
		appr, approved := approvals[name]
		cur := defs[0]
		for _, d := range defs {
			if !approved || d.hash != appr.Hash {
				cur = d
				break
			}
		}
		t := Tool{Name: name, Description: cur.c.Description, InputSchema: cur.c.InputSchema, Hash: cur.hash, inputSchema: mcpSchema(cur.c.InputSchema)}
		for _, d := range defs {
			t.Agents = append(t.Agents, d.agent)
		}
		switch {
		case !approved:
			t.Status = StatusPending
		case appr.Hash == cur.hash:
			t.Status, t.ApprovedHash = StatusApproved, appr.Hash
		default:
			t.Status, t.ApprovedHash = StatusChanged, appr.Hash
			if err := s.auditWithheld(ctx, tenantID, t); err != nil {
				return nil, err
			}
		}
		out = append(out, t)
	}
	sortTools(out)
	return out, nil
}

type defOf struct {
	agent string
	c     registry.Capability
	hash  string
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// auditWithheld records once that t's changed definition is withheld.
func (s *Service) auditWithheld(ctx context.Context, tenantID string, t Tool) error {
	first, err := s.deps.Approvals.MarkToolWithheld(ctx, tenantID, t.Name, t.Hash)
	if err != nil {
		return err
	}
	if !first {
		return nil
	}
	return s.deps.Audit.RecordAction(ctx, control.Action{
		Tenant: tenantID, Action: ActionToolWithheld, Resource: "mcp/tools/" + t.Name,
		Reason: fmt.Sprintf("definition changed since its approval: approved sha256 %s, current sha256 %s; withheld from MCP clients until approved again", t.ApprovedHash, t.Hash),
	})
}

// mcpSchema is the input schema MCP clients get for a declared one: {"type":"object"} for none,
// the schema itself when it is an object schema, nil otherwise.
func mcpSchema(raw json.RawMessage) json.RawMessage {
	if len(bytes.TrimSpace(raw)) == 0 {
		return json.RawMessage(`{"type":"object"}`)
	}
	var top struct {
		Type any `json:"type"`
	}
	if err := json.Unmarshal(raw, &top); err != nil || top.Type != "object" {
		return nil
	}
	return raw
}

// Approve approves the tenant's tool name under hash, which must be the hash of its current
// definition (what the administrator saw): otherwise 409, and nothing changes. The approval is
// recorded in the audit trail; the tool is listed and callable at once, on every replica.
func (s *Service) Approve(ctx context.Context, tenantID, name, hash string) (Tool, error) {
	if !toolpin.ValidHash(hash) {
		return Tool{}, errs.Field("body.hash", "must be a SHA-256 in lower-case hex (64 characters)")
	}
	tools, err := s.Tools(ctx, tenantID, name)
	if err != nil {
		return Tool{}, err
	}
	if len(tools) == 0 {
		return Tool{}, errs.New(errs.NotFound, "no live agent of this tenant offers tool %q", name)
	}
	t := tools[0]
	if t.Hash != hash {
		return Tool{}, errs.New(errs.Conflict, "the definition of tool %q is now sha256 %s, not the %s approved: review it again", name, t.Hash, hash)
	}
	err = s.deps.Approvals.PutToolApproval(ctx, toolpin.Approval{
		TenantID: tenantID, Tool: name, Hash: hash, ApprovedBy: principalSubject(ctx), ApprovedAt: s.deps.Now().UTC(),
	})
	if err != nil {
		return Tool{}, err
	}
	if err := s.deps.Audit.RecordAction(ctx, control.Action{
		Tenant: tenantID, Action: ActionToolApprove, Resource: "mcp/tools/" + name,
		Reason: fmt.Sprintf("approved definition sha256 %s (previously %s)", hash, orNone(t.ApprovedHash)),
	}); err != nil {
		return Tool{}, err
	}
	tools, err = s.Tools(ctx, tenantID, name)
	if err != nil {
		return Tool{}, err
	}
	if len(tools) == 0 {
		return Tool{}, errs.New(errs.NotFound, "no live agent of this tenant offers tool %q", name)
	}
	return tools[0], nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
