package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strings"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/httpapi/gen"
	"github.com/nops-kernel/nops/internal/registry"
)

func (h *handlers) RegisterAgent(ctx context.Context, req gen.RegisterAgentRequestObject) (gen.RegisterAgentResponseObject, error) {
	tenantID, err := h.tenantFor(ctx, req.Params.Tenant)
	if err != nil {
		return nil, err
	}
	in, err := agentIn(*req.Body)
	if err != nil {
		return nil, err
	}
	a, err := h.deps.Control.RegisterAgent(ctx, tenantID, in)
	if err != nil {
		return nil, err
	}
	body, err := agentOut(a)
	if err != nil {
		return nil, err
	}
	return gen.RegisterAgent201JSONResponse{Body: body, Headers: gen.RegisterAgent201ResponseHeaders{ETag: ptr(a.ETag())}}, nil
}

func (h *handlers) GetAgent(ctx context.Context, req gen.GetAgentRequestObject) (gen.GetAgentResponseObject, error) {
	tenantID, err := h.tenantFor(ctx, req.Params.Tenant)
	if err != nil {
		return nil, err
	}
	// The ABAC check of this request may have read the agent already (agent-scoped policies):
	// the same read, within the same request, is not repeated.
	a, ok := policyAgentFrom(ctx, tenantID, req.AgentId)
	if !ok {
		if a, err = h.deps.Control.Agents.Get(ctx, tenantID, req.AgentId); err != nil {
			return nil, err
		}
	}
	body, err := agentOut(a)
	if err != nil {
		return nil, err
	}
	return gen.GetAgent200JSONResponse{Body: body, Headers: gen.GetAgent200ResponseHeaders{ETag: ptr(a.ETag())}}, nil
}

func (h *handlers) UpdateAgent(ctx context.Context, req gen.UpdateAgentRequestObject) (gen.UpdateAgentResponseObject, error) {
	tenantID, err := h.tenantFor(ctx, req.Params.Tenant)
	if err != nil {
		return nil, err
	}
	in, err := agentIn(*req.Body)
	if err != nil {
		return nil, err
	}
	a, err := h.deps.Control.UpdateAgent(ctx, tenantID, req.AgentId, req.Params.IfMatch, in)
	if err != nil {
		return nil, err
	}
	body, err := agentOut(a)
	if err != nil {
		return nil, err
	}
	return gen.UpdateAgent200JSONResponse{Body: body, Headers: gen.UpdateAgent200ResponseHeaders{ETag: ptr(a.ETag())}}, nil
}

func (h *handlers) DeregisterAgent(ctx context.Context, req gen.DeregisterAgentRequestObject) (gen.DeregisterAgentResponseObject, error) {
	tenantID, err := h.tenantFor(ctx, req.Params.Tenant)
	if err != nil {
		return nil, err
	}
	// The contract has no If-Match on DELETE: deregistration is unconditional. With workload
	// identity on, the agent's SPIFFE ID is revoked with it (its SVIDs stop working).
	if rv, err := h.revocations(); err == nil {
		rec, err := rv.DeregisterAgent(ctx, tenantID, req.AgentId)
		if err != nil {
			return nil, err
		}
		h.applyRevocation(ctx, rec)
		return gen.DeregisterAgent204Response{}, nil
	}
	if err := h.deps.Control.DeregisterAgent(ctx, tenantID, req.AgentId, ""); err != nil {
		return nil, err
	}
	return gen.DeregisterAgent204Response{}, nil
}

func (h *handlers) HeartbeatAgent(ctx context.Context, req gen.HeartbeatAgentRequestObject) (gen.HeartbeatAgentResponseObject, error) {
	tenantID, err := h.tenantFor(ctx, req.Params.Tenant)
	if err != nil {
		return nil, err
	}
	var in registry.HeartbeatInput
	if b := req.Body; b != nil {
		in = registry.HeartbeatInput{InFlight: b.InFlight, P50Ms: b.P50Ms, P95Ms: b.P95Ms, ErrorRate: b.ErrorRate, FreeCapacity: b.FreeCapacity}
	}
	res, err := h.deps.Control.Heartbeat(ctx, tenantID, req.AgentId, in)
	if err != nil {
		return nil, err
	}
	out := gen.HeartbeatAgent200JSONResponse{
		AgentId:     res.AgentID,
		Status:      gen.HeartbeatResultStatus(res.Current),
		HeartbeatAt: res.At.UTC(),
	}
	if res.Previous != "" {
		out.PreviousStatus = ptr(gen.HeartbeatResultPreviousStatus(res.Previous))
	}
	return out, nil
}

func (h *handlers) ListAgents(ctx context.Context, req gen.ListAgentsRequestObject) (gen.ListAgentsResponseObject, error) {
	tenantID, err := h.tenantFor(ctx, req.Params.Tenant)
	if err != nil {
		return nil, err
	}
	sel, err := registry.ParseSelector(deref(req.Params.Selector))
	if err != nil {
		return nil, err
	}
	statuses, err := parseStatuses(deref(req.Params.Status))
	if err != nil {
		return nil, err
	}
	page, err := h.deps.Control.Agents.List(ctx, tenantID, registry.Filter{
		Capability: deref(req.Params.Capability),
		Selector:   sel,
		Status:     statuses,
		Limit:      deref(req.Params.Limit),
		Cursor:     deref(req.Params.Cursor),
	})
	if err != nil {
		return nil, err
	}
	out := gen.ListAgents200JSONResponse{Items: make([]gen.Agent, 0, len(page.Agents)), NextCursor: optString(page.NextCursor)}
	for _, a := range page.Agents {
		item, err := agentOut(a)
		if err != nil {
			return nil, err
		}
		out.Items = append(out.Items, item)
	}
	return out, nil
}

// parseStatuses reads the status filter: comma-separated statuses, blanks around each allowed.
// The empty string is no filter.
func parseStatuses(s string) ([]registry.Status, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []registry.Status
	for part := range strings.SplitSeq(s, ",") {
		st := registry.Status(strings.TrimSpace(part))
		if !st.Valid() {
			return nil, errs.Field("query.status", "must be a comma-separated list of healthy, stale and zombie")
		}
		out = append(out, st)
	}
	return out, nil
}

// agentIn converts a client's AgentSpec into the registry's input. Validation is the registry's:
// this only changes representation (schemas become the raw JSON the registry compiles).
func agentIn(spec gen.AgentSpec) (registry.AgentInput, error) {
	in := registry.AgentInput{
		Name:     spec.Name,
		Version:  spec.Version,
		Endpoint: spec.Endpoint,
		Labels:   deref(spec.Labels),
		Metadata: deref(spec.Metadata),
	}
	if spec.Criticality != nil {
		in.Criticality = registry.Criticality(*spec.Criticality)
	}
	if spec.Capabilities != nil {
		in.Capabilities = make([]registry.Capability, 0, len(*spec.Capabilities))
		for i, c := range *spec.Capabilities {
			rc := registry.Capability{Name: c.Name, Description: deref(c.Description)}
			var err error
			if rc.InputSchema, err = schemaIn(c.InputSchema, fmt.Sprintf("body.capabilities[%d].input_schema", i)); err != nil {
				return registry.AgentInput{}, err
			}
			if rc.OutputSchema, err = schemaIn(c.OutputSchema, fmt.Sprintf("body.capabilities[%d].output_schema", i)); err != nil {
				return registry.AgentInput{}, err
			}
			in.Capabilities = append(in.Capabilities, rc)
		}
	}
	return in, nil
}

// schemaIn encodes a decoded JSON object back to JSON; nil stays absent.
func schemaIn(m *map[string]any, field string) (json.RawMessage, error) {
	if m == nil {
		return nil, nil
	}
	raw, err := json.Marshal(*m)
	if err != nil {
		// A value decoded from JSON always encodes again; this is a defence, not a path.
		return nil, errs.Field(field, "must be a JSON object")
	}
	return raw, nil
}

// agentOut renders an agent as the contract requires: labels, metadata and load always objects,
// capabilities always an array.
func agentOut(a registry.Agent) (gen.Agent, error) {
	out := gen.Agent{
		Id:           a.ID,
		Tenant:       a.TenantID,
		Name:         a.Name,
		Version:      a.Version,
		Capabilities: make([]gen.Capability, 0, len(a.Capabilities)),
		Endpoint:     a.Endpoint,
		Labels:       map[string]string{},
		Metadata:     map[string]any{},
		Criticality:  gen.AgentCriticality(a.Criticality),
		Status:       gen.AgentStatus(a.Status),
		HeartbeatAt:  a.HeartbeatAt.UTC(),
		Load: gen.Load{
			InFlight:     a.Load.InFlight,
			P50Ms:        a.Load.P50Ms,
			P95Ms:        a.Load.P95Ms,
			ErrorRate:    a.Load.ErrorRate,
			FreeCapacity: a.Load.FreeCapacity,
		},
		CreatedAt: a.CreatedAt.UTC(),
		UpdatedAt: a.UpdatedAt.UTC(),
		Revision:  a.Revision,
	}
	maps.Copy(out.Labels, a.Labels)
	maps.Copy(out.Metadata, a.Metadata)
	for _, c := range a.Capabilities {
		gc := gen.Capability{Name: c.Name, Description: optString(c.Description)}
		var err error
		if gc.InputSchema, err = schemaOut(c.InputSchema); err != nil {
			return gen.Agent{}, fmt.Errorf("agent %s capability %s input schema: %w", a.ID, c.Name, err)
		}
		if gc.OutputSchema, err = schemaOut(c.OutputSchema); err != nil {
			return gen.Agent{}, fmt.Errorf("agent %s capability %s output schema: %w", a.ID, c.Name, err)
		}
		out.Capabilities = append(out.Capabilities, gc)
	}
	return out, nil
}

// schemaOut decodes a stored schema into the JSON object the contract shows; empty stays absent.
// The registry only stores objects (the contract admits nothing else), so a failure here means
// the stored row is damaged.
func schemaOut(raw json.RawMessage) (*map[string]any, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("decode stored schema: %w", err)
	}
	if m == nil {
		return nil, nil
	}
	return &m, nil
}
