package events_test

import (
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/events"
)

// base is a fixed instant with nanoseconds, in UTC.
var base = time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.UTC)

const (
	tenantA = "ten_01jq7x3k9m2v8w4y6z0a1b2c3d"
	agentID = "agt_01jq7x3k9m2v8w4y6z0a1b2c3e"
	keyID   = "key_01jq7x3k9m2v8w4y6z0a1b2c3f"
	// invocationID names the invocation of the invocation samples.
	invocationID = "inv_01jq7x3k9m2v8w4y6z0a1b2c42"
	traceparnt   = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
)

func ptr[T any](v T) *T { return &v }

func agentFull() events.AgentSnapshot {
	return events.AgentSnapshot{
		ID: agentID, Tenant: tenantA, Name: "summariser", Version: "1.4.2",
		Capabilities: []string{"summarise", "translate"},
		Endpoint:     "https://agents.example.com/summariser",
		Labels:       map[string]string{"team": "docs", "tier": "gold"},
		Criticality:  "critical", Status: "healthy",
		HeartbeatAt: ptr(base.Add(-time.Second)), Revision: 7,
		CreatedAt: base.Add(-time.Hour), UpdatedAt: base,
	}
}

func agentMinimal() events.AgentSnapshot {
	return events.AgentSnapshot{
		ID: agentID, Tenant: tenantA, Name: "a", Version: "0.1.0",
		Endpoint: "http://127.0.0.1:9000", Criticality: "best_effort", Status: "zombie",
		Revision: 1, CreatedAt: base, UpdatedAt: base,
	}
}

func routeFull() events.RouteSnapshot {
	return events.RouteSnapshot{
		Tenant: tenantA, Capability: "text.summarize",
		Targets: []events.RouteTarget{
			{AgentID: agentID, Weight: 0},
			{Version: "1.2", Weight: 90},
			{Version: "1.3.0-rc.1", Weight: 10},
			{Version: "1", Weight: 10000, Priority: 15},
		},
		StickyHeader: "X-Session-Id", TimeoutMs: 2500, Retryable: true,
		Hedge:    &events.RouteHedge{DelayMs: 150, MaxExtra: 2},
		Revision: 3, CreatedAt: base.Add(-time.Hour), UpdatedAt: base,
	}
}

func routeMinimal() events.RouteSnapshot {
	return events.RouteSnapshot{
		Tenant: tenantA, Capability: "a", Targets: []events.RouteTarget{{Version: "2", Weight: 1}},
		Revision: 1, CreatedAt: base, UpdatedAt: base,
	}
}

func keyFull() events.APIKeySnapshot {
	return events.APIKeySnapshot{
		ID: keyID, Tenant: tenantA, AgentID: agentID, Name: "ci",
		Scopes: []string{"agents:read", "agents:write"}, CreatedAt: base.Add(-time.Hour),
		ExpiresAt: ptr(base.Add(90 * 24 * time.Hour)), RevokedAt: ptr(base),
	}
}

func keyMinimal() events.APIKeySnapshot {
	return events.APIKeySnapshot{ID: keyID, Tenant: tenantA, Name: "k", CreatedAt: base}
}

func tenantSnap(status string) events.TenantSnapshot {
	return events.TenantSnapshot{ID: tenantA, Name: "Acme", Status: status, CreatedAt: base.Add(-time.Hour), UpdatedAt: base}
}

// sample is one payload of a catalogue type with the envelope attributes New needs.
type sample struct {
	name    string
	typ     events.Type
	tenant  string
	subject string
	payload events.Payload
}

// samples returns, for every catalogue type, a payload with every optional field set and one
// with only the required fields.
func samples() []sample {
	as, ks, ts := events.AgentSubject(agentID), events.APIKeySubject(keyID), events.TenantSubject(tenantA)
	us := events.UsageSubject(tenantA)
	rs, rms := events.RouteSubject("text.summarize"), events.RouteSubject("a")
	is := events.InvocationSubject(tenantA)
	revoked := keyMinimal()
	revoked.RevokedAt = ptr(base)
	return []sample{
		{"agent registered full", events.TypeAgentRegistered, tenantA, as, events.AgentRegistered{Agent: agentFull()}},
		{"agent registered minimal", events.TypeAgentRegistered, tenantA, as, events.AgentRegistered{Agent: agentMinimal()}},
		{"agent updated full", events.TypeAgentUpdated, tenantA, as, events.AgentUpdated{Agent: agentFull()}},
		{"agent updated minimal", events.TypeAgentUpdated, tenantA, as, &events.AgentUpdated{Agent: agentMinimal()}},
		{"agent heartbeat full", events.TypeAgentHeartbeat, tenantA, as, events.AgentHeartbeat{
			AgentID: agentID, Tenant: tenantA, HeartbeatAt: base,
			Load: &events.AgentLoad{
				InFlight: ptr[int64](3), LatencyP50Ms: ptr(12.5), LatencyP95Ms: ptr(80.25),
				ErrorRate: ptr(0.01), FreeCapacity: ptr[int64](97),
			},
		}},
		{"agent heartbeat minimal", events.TypeAgentHeartbeat, tenantA, as, events.AgentHeartbeat{AgentID: agentID, Tenant: tenantA, HeartbeatAt: base}},
		{"agent heartbeat zero load", events.TypeAgentHeartbeat, tenantA, as, events.AgentHeartbeat{
			AgentID: agentID, Tenant: tenantA, HeartbeatAt: base,
			Load: &events.AgentLoad{InFlight: ptr[int64](0), ErrorRate: ptr(0.0)},
		}},
		{"agent status changed full", events.TypeAgentStatusChanged, tenantA, as, events.AgentStatusChanged{
			AgentID: agentID, Tenant: tenantA, From: "healthy", To: "stale",
			HeartbeatAt: ptr(base.Add(-time.Minute)), ChangedAt: base,
		}},
		{"agent status changed minimal", events.TypeAgentStatusChanged, tenantA, as, events.AgentStatusChanged{
			AgentID: agentID, Tenant: tenantA, From: "stale", To: "zombie", ChangedAt: base,
		}},
		{"agent deregistered full", events.TypeAgentDeregistered, tenantA, as, events.AgentDeregistered{Agent: agentFull()}},
		{"agent deregistered minimal", events.TypeAgentDeregistered, tenantA, as, events.AgentDeregistered{Agent: agentMinimal()}},
		{"apikey created full", events.TypeAPIKeyCreated, tenantA, ks, events.APIKeyCreated{Key: keyFull()}},
		{"apikey created minimal", events.TypeAPIKeyCreated, tenantA, ks, events.APIKeyCreated{Key: keyMinimal()}},
		{"apikey rotation required", events.TypeAPIKeyRotationRequired, tenantA, ks, events.APIKeyRotationRequired{
			Key: keyFull(), RequiredAt: base, RotateBy: base.Add(24 * time.Hour),
		}},
		{"apikey rotated full", events.TypeAPIKeyRotated, tenantA, ks, events.APIKeyRotated{
			Key: keyFull(), RotatedAt: base, GraceUntil: base.Add(24 * time.Hour),
		}},
		{"apikey rotated minimal", events.TypeAPIKeyRotated, tenantA, ks, events.APIKeyRotated{
			Key: keyMinimal(), RotatedAt: base, GraceUntil: base,
		}},
		{"apikey revoked full", events.TypeAPIKeyRevoked, tenantA, ks, events.APIKeyRevoked{Key: keyFull()}},
		{"apikey revoked minimal", events.TypeAPIKeyRevoked, tenantA, ks, events.APIKeyRevoked{Key: revoked}},
		{"tenant created", events.TypeTenantCreated, tenantA, ts, events.TenantCreated{Tenant: tenantSnap("active")}},
		{"tenant updated", events.TypeTenantUpdated, tenantA, ts, events.TenantUpdated{Tenant: tenantSnap("suspended")}},
		{"tenant suspended", events.TypeTenantSuspended, tenantA, ts, events.TenantSuspended{Tenant: tenantSnap("suspended")}},
		{"tenant resumed", events.TypeTenantResumed, tenantA, ts, events.TenantResumed{Tenant: tenantSnap("active")}},
		{"tenant deleted full", events.TypeTenantDeleted, tenantA, ts, events.TenantDeleted{Tenant: tenantSnap("active"), Cascade: true, DeletedAt: base}},
		{"tenant deleted minimal", events.TypeTenantDeleted, tenantA, ts, events.TenantDeleted{Tenant: tenantSnap("suspended"), DeletedAt: base}},
		{"billing usage gateway full", events.TypeBillingUsage, tenantA, us, events.BillingUsage{
			Tenant: tenantA, AgentID: agentID, Source: "gateway", Route: "POST /v1/agents/{agent_id}/heartbeat",
			Capability: "text.summarize", RequestID: "req_01jq7x3k9m2v8w4y6z0a1b2c40", Status: 202,
			RequestBytes: 512, ResponseBytes: 2048, DurationMs: 3.25, StartedAt: base.Add(-time.Second),
		}},
		{"billing usage invocation minimal", events.TypeBillingUsage, tenantA, us, &events.BillingUsage{
			Tenant: tenantA, Source: "invocation", Capability: "text.summarize", Status: 500, StartedAt: base,
		}},
		{"route updated full", events.TypeRouteUpdated, tenantA, rs, events.RouteUpdated{Route: routeFull()}},
		{"route updated minimal", events.TypeRouteUpdated, tenantA, rms, &events.RouteUpdated{Route: routeMinimal()}},
		{"route deleted full", events.TypeRouteDeleted, tenantA, rs, events.RouteDeleted{Route: routeFull(), DeletedAt: base}},
		{"route deleted minimal", events.TypeRouteDeleted, tenantA, rms, events.RouteDeleted{Route: routeMinimal(), DeletedAt: base}},
		{"invocation requested", events.TypeInvocationRequested, tenantA, is, events.InvocationRequested{
			InvocationID: invocationID, Tenant: tenantA, Capability: "text.summarize", CreatedAt: base,
		}},
		{"invocation completed full", events.TypeInvocationCompleted, tenantA, is, events.InvocationCompleted{
			InvocationID: invocationID, Tenant: tenantA, Capability: "text.summarize", AgentID: agentID,
			Status: 200, Outcome: "ok", Attempts: 2, RequestBytes: 512, ResponseBytes: 2048, DurationMs: 12.5,
			StartedAt: base.Add(-time.Second), Async: true, RequestID: "req_01jq7x3k9m2v8w4y6z0a1b2c40",
		}},
		{"invocation completed minimal", events.TypeInvocationCompleted, tenantA, is, &events.InvocationCompleted{
			InvocationID: invocationID, Tenant: tenantA, Capability: "a", Status: 503, Outcome: "rejected", StartedAt: base,
		}},
		{"flag changed", events.TypeFlagChanged, events.KernelTenant, events.FlagSubject("checkout.new-flow"), events.FlagChanged{
			Key: "checkout.new-flow", Change: events.FlagUpdated, Revision: 4, ChangedAt: base,
		}},
		{"flag deleted", events.TypeFlagChanged, events.KernelTenant, events.FlagSubject("a"), &events.FlagChanged{
			Key: "a", Change: events.FlagDeleted, Revision: 1, ChangedAt: base,
		}},
		{"degradation entered", events.TypeDegradationChanged, events.KernelTenant, events.DegradationSubject("read_only"), events.DegradationChanged{
			Mode: events.DegradeReadOnly, Change: events.DegradeEntered, Trigger: events.DegradeTriggerAuto, Reason: "database write probe failing: unavailable", Kernel: "kernel-1.example", ChangedAt: base,
		}},
		{"degradation left", events.TypeDegradationChanged, events.KernelTenant, events.DegradationSubject("shed_best_effort"), &events.DegradationChanged{
			Mode: events.DegradeShedBestEffort, Change: events.DegradeLeft, Trigger: events.DegradeTriggerManual, Reason: "flag kernel.degrade.shed_best_effort", Kernel: "k", ChangedAt: base,
		}},
		{"agent breaker changed", events.TypeAgentBreakerChanged, tenantA, events.AgentSubject(agentID), events.AgentBreakerChanged{
			AgentID: agentID, Tenant: tenantA, From: "closed", To: "open", Kernel: "kernel-1.example", ChangedAt: base,
		}},
		{"agent breaker changed minimal", events.TypeAgentBreakerChanged, tenantA, events.AgentSubject(agentID), &events.AgentBreakerChanged{
			AgentID: agentID, Tenant: tenantA, From: "open", To: "half_open", ChangedAt: base,
		}},
	}
}

// newEvent builds the event of s with New and fails the test on error.
func newEvent(t testing.TB, s sample) events.Event {
	t.Helper()
	e, err := events.New(s.typ, s.tenant, s.subject, s.payload, base, traceparnt)
	if err != nil {
		t.Fatalf("New(%s): %v", s.name, err)
	}
	return e
}

// mustMarshal serializes e and fails the test on error.
func mustMarshal(t testing.TB, e events.Event) []byte {
	t.Helper()
	b, err := e.MarshalJSON()
	if err != nil {
		t.Fatalf("MarshalJSON: %v", err)
	}
	return b
}
