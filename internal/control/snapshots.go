package control

import (
	"time"

	"github.com/nops-kernel/nops/internal/apikey"
	"github.com/nops-kernel/nops/internal/events"
	"github.com/nops-kernel/nops/internal/registry"
	"github.com/nops-kernel/nops/internal/tenant"
)

func tenantSnapshot(t tenant.Tenant) events.TenantSnapshot {
	return events.TenantSnapshot{ID: t.ID, Name: t.Name, Status: string(t.Status), CreatedAt: t.CreatedAt, UpdatedAt: t.UpdatedAt}
}

func agentSnapshot(a registry.Agent) events.AgentSnapshot {
	s := events.AgentSnapshot{
		ID: a.ID, Tenant: a.TenantID, Name: a.Name, Version: a.Version, Endpoint: a.Endpoint,
		Labels: a.Labels, Criticality: string(a.Criticality), Status: string(a.Status),
		Revision: a.Revision, CreatedAt: a.CreatedAt, UpdatedAt: a.UpdatedAt,
	}
	for _, c := range a.Capabilities {
		s.Capabilities = append(s.Capabilities, c.Name)
	}
	if !a.HeartbeatAt.IsZero() {
		hb := a.HeartbeatAt
		s.HeartbeatAt = &hb
	}
	return s
}

func loadSnapshot(l registry.Load) *events.AgentLoad {
	if l == (registry.Load{}) {
		return nil
	}
	return &events.AgentLoad{InFlight: l.InFlight, LatencyP50Ms: l.P50Ms, LatencyP95Ms: l.P95Ms, ErrorRate: l.ErrorRate, FreeCapacity: l.FreeCapacity}
}

func keySnapshot(k apikey.Key) events.APIKeySnapshot {
	return events.APIKeySnapshot{
		ID: k.ID, Tenant: k.TenantID, AgentID: k.AgentID, Name: k.Name, Scopes: k.Scopes,
		CreatedAt: k.CreatedAt, ExpiresAt: optTime(k.ExpiresAt), RevokedAt: optTime(k.RevokedAt),
	}
}

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
