package storetest

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/registry"
	"github.com/nops-kernel/nops/internal/tenant"
)

// RunAgents runs the registry.Store suite. open must return a fresh store with every migration
// applied, on a database no other test uses, and close it through t.Cleanup.
func RunAgents(t *testing.T, open func(t *testing.T) DomainStore) {
	t.Run("round trip", func(t *testing.T) { t.Parallel(); testAgentRoundTrip(t, open) })
	t.Run("create errors", func(t *testing.T) { t.Parallel(); testAgentCreateErrors(t, open) })
	t.Run("tenant isolation", func(t *testing.T) { t.Parallel(); testAgentIsolation(t, open) })
	t.Run("list order, paging and capability", func(t *testing.T) { t.Parallel(); testAgentList(t, open) })
	t.Run("update", func(t *testing.T) { t.Parallel(); testAgentUpdate(t, open) })
	t.Run("delete", func(t *testing.T) { t.Parallel(); testAgentDelete(t, open) })
	t.Run("heartbeat", func(t *testing.T) { t.Parallel(); testAgentHeartbeat(t, open) })
	t.Run("set status", func(t *testing.T) { t.Parallel(); testAgentSetStatus(t, open) })
	t.Run("sweep candidates", func(t *testing.T) { t.Parallel(); testAgentSweep(t, open) })
	t.Run("routing candidates", func(t *testing.T) { t.Parallel(); testAgentRouting(t, open) })
	t.Run("transactions", func(t *testing.T) { t.Parallel(); testAgentTransactions(t, open) })
	t.Run("concurrency", func(t *testing.T) { t.Parallel(); testAgentConcurrency(t, open) })
}

// domAgent returns a healthy agent at revision 1, registered (and last heartbeating) at created,
// offering the named capabilities, with its collections empty as registry's Normalize leaves them.
func domAgent(tenantID, id, name string, created time.Time, capabilities ...string) registry.Agent {
	caps := []registry.Capability{}
	for _, c := range capabilities {
		caps = append(caps, registry.Capability{Name: c})
	}
	return registry.Agent{
		ID: id, TenantID: tenantID, Name: name, Version: "1.0.0", Capabilities: caps,
		Endpoint: "https://" + name + ".example/", Labels: map[string]string{}, Metadata: map[string]any{},
		Criticality: registry.CriticalityBestEffort, Status: registry.StatusHealthy,
		HeartbeatAt: created, CreatedAt: created, UpdatedAt: created, Revision: 1,
	}
}

// storedAgent is what an adapter returns for a: times in UTC at microsecond precision.
func storedAgent(a registry.Agent) registry.Agent {
	a.HeartbeatAt, a.CreatedAt, a.UpdatedAt = stored(a.HeartbeatAt), stored(a.CreatedAt), stored(a.UpdatedAt)
	return a
}

func domCreateAgents(t *testing.T, s DomainStore, as ...registry.Agent) {
	t.Helper()
	for _, a := range as {
		if err := s.CreateAgent(t.Context(), a); err != nil {
			t.Fatalf("CreateAgent(%s): %v", a.ID, err)
		}
	}
}

// domGetAgent returns the stored agent, failing the test when it cannot.
func domGetAgent(t *testing.T, ctx context.Context, s DomainStore, tenantID, id string) registry.Agent {
	t.Helper()
	a, err := s.AgentByID(ctx, tenantID, id)
	if err != nil {
		t.Fatalf("AgentByID(%s, %s): %v", tenantID, id, err)
	}
	return a
}

// domAgentIDs returns the IDs of as, in order.
func domAgentIDs(as []registry.Agent) []string {
	ids := []string{}
	for _, a := range as {
		ids = append(ids, a.ID)
	}
	return ids
}

// domListIDs lists the tenant's agents offering capability ("" for any), all at once.
func domListIDs(t *testing.T, ctx context.Context, s DomainStore, tenantID, capability string) []string {
	t.Helper()
	as, err := s.ListAgents(ctx, tenantID, registry.ListQuery{Capability: capability, Limit: 1000})
	if err != nil {
		t.Fatalf("ListAgents(%s, %q): %v", tenantID, capability, err)
	}
	return domAgentIDs(as)
}

func domPtr[T any](v T) *T { return &v }

func testAgentRoundTrip(t *testing.T, open func(t *testing.T) DomainStore) {
	s := open(t)
	domCreateTenants(t, s, domTenant("ten_a", "a", base))
	full := registry.Agent{
		ID: "agt_full", TenantID: "ten_a", Name: "summarizer", Version: "1.2.3-rc.1",
		Capabilities: []registry.Capability{
			{
				Name: "text.summarize", Description: "Summarise text.\n\tIndented, ünïcode.",
				// White space goes (encoding/json compacts it), key order stays: a registration
				// must read back as the same JSON bytes.
				InputSchema:  json.RawMessage(`{ "type": "object", "properties": { "z": {"type": "string"}, "a": {} } }`),
				OutputSchema: json.RawMessage(`{"type":"string","maxLength":1e3}`),
			},
			{Name: "text.translate"},
		},
		Endpoint: "https://agents.example:8443/summarizer?x=1",
		Labels:   map[string]string{"tier": "gold", "example.com/team": "core", "empty": ""},
		Metadata: map[string]any{
			"owner": "ops", "weight": 1.5, "big": 1e21, "flag": true, "none": nil,
			"nested": map[string]any{"list": []any{1.0, "two", false}},
			"nul":    "a\u0000b", // refused by PostgreSQL's jsonb, not by json or SQLite
		},
		Criticality: registry.CriticalityCritical, Status: registry.StatusStale,
		HeartbeatAt: base.Add(time.Minute),
		Load: registry.Load{InFlight: domPtr[int64](3), P50Ms: domPtr(12.5), P95Ms: domPtr(80.25), ErrorRate: domPtr(0.001),
			FreeCapacity: domPtr[int64](0)},
		CreatedAt: base, UpdatedAt: base.Add(2 * time.Minute), Revision: 3,
	}
	fullWant := storedAgent(full)
	fullWant.Capabilities = []registry.Capability{
		{
			Name: "text.summarize", Description: "Summarise text.\n\tIndented, ünïcode.",
			InputSchema:  json.RawMessage(`{"type":"object","properties":{"z":{"type":"string"},"a":{}}}`),
			OutputSchema: json.RawMessage(`{"type":"string","maxLength":1e3}`),
		},
		{Name: "text.translate"},
	}

	minimal := domAgent("ten_a", "agt_min", "minimal", base.Add(time.Second))
	minimal.Status = ""

	// nil collections read back empty, as Normalize makes them for every stored agent.
	nils := domAgent("ten_a", "agt_nil", "nils", base.Add(2*time.Second))
	nils.Capabilities, nils.Labels, nils.Metadata = nil, nil, nil
	nilsWant := storedAgent(nils)
	nilsWant.Capabilities, nilsWant.Labels, nilsWant.Metadata = []registry.Capability{}, map[string]string{}, map[string]any{}

	tests := []struct {
		name string
		in   registry.Agent
		want registry.Agent
	}{
		{"every field", full, fullWant},
		{"empty collections and unset status", minimal, storedAgent(minimal)},
		{"nil collections", nils, nilsWant},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			domCreateAgents(t, s, tt.in)
			got := domGetAgent(t, t.Context(), s, "ten_a", tt.in.ID)
			if diff := gocmp.Diff(tt.want, got); diff != "" {
				t.Errorf("agent (-want +got):\n%s", diff)
			}
			checkUTC(t, "HeartbeatAt", got.HeartbeatAt)
			checkUTC(t, "CreatedAt", got.CreatedAt)
			checkUTC(t, "UpdatedAt", got.UpdatedAt)
			listed, err := s.ListAgents(t.Context(), "ten_a", registry.ListQuery{After: &registry.Cursor{CreatedAt: tt.in.CreatedAt.Add(-time.Microsecond)}, Limit: 1})
			if err != nil {
				t.Fatalf("ListAgents: %v", err)
			}
			if diff := gocmp.Diff([]registry.Agent{tt.want}, listed); diff != "" {
				t.Errorf("listed agent (-want +got):\n%s", diff)
			}
		})
	}
}

func testAgentCreateErrors(t *testing.T, open func(t *testing.T) DomainStore) {
	s := open(t)
	ctx := t.Context()
	domCreateTenants(t, s, domTenant("ten_a", "a", base), domTenant("ten_b", "b", base))
	first := domAgent("ten_a", "agt_1", "one", base, "run")
	domCreateAgents(t, s, first)
	tests := []struct {
		name string
		in   registry.Agent
		code errs.Code
	}{
		{"unknown tenant", domAgent("ten_nope", "agt_2", "two", base, "run"), errs.NotFound},
		{"name taken in the tenant", domAgent("ten_a", "agt_3", "one", base, "other"), errs.Conflict},
		{"id taken in another tenant", domAgent("ten_b", "agt_1", "another", base, "run"), errs.Conflict},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			domCode(t, "CreateAgent", s.CreateAgent(ctx, tt.in), tt.code)
		})
	}
	// Nothing of the refused agents was stored: neither rows nor capability rows.
	if diff := gocmp.Diff([]string{"agt_1"}, domListIDs(t, ctx, s, "ten_a", "")); diff != "" {
		t.Errorf("agents of ten_a (-want +got):\n%s", diff)
	}
	if ids := domListIDs(t, ctx, s, "ten_a", "other"); len(ids) != 0 {
		t.Errorf("capability of a refused agent listed: %v", ids)
	}
	if ids := domListIDs(t, ctx, s, "ten_b", ""); len(ids) != 0 {
		t.Errorf("agents of ten_b = %v, want none", ids)
	}
	// The same name in another tenant is fine.
	domCreateAgents(t, s, domAgent("ten_b", "agt_4", "one", base, "run"))
}

func testAgentIsolation(t *testing.T, open func(t *testing.T) DomainStore) {
	s := open(t)
	ctx := t.Context()
	domCreateTenants(t, s, domTenant("ten_a", "a", base), domTenant("ten_b", "b", base))
	a := domAgent("ten_a", "agt_1", "one", base, "run")
	domCreateAgents(t, s, a)

	_, err := s.AgentByID(ctx, "ten_b", a.ID)
	domCode(t, "AgentByID with another tenant", err, errs.NotFound)
	other := a
	other.TenantID, other.Name, other.Revision = "ten_b", "stolen", 2
	err = s.UpdateAgent(ctx, other, 1)
	domCode(t, "UpdateAgent with another tenant", err, errs.NotFound)
	if errors.Is(err, registry.ErrPreconditionFailed) {
		t.Errorf("UpdateAgent with another tenant wraps ErrPreconditionFailed: %v", err)
	}
	domCode(t, "DeleteAgent with another tenant", s.DeleteAgent(ctx, "ten_b", a.ID, 1), errs.NotFound)
	_, err = s.Heartbeat(ctx, "ten_b", a.ID, base.Add(time.Hour), registry.Load{})
	domCode(t, "Heartbeat with another tenant", err, errs.NotFound)
	ok, err := s.SetAgentStatus(ctx, registry.StatusChange{TenantID: "ten_b", AgentID: a.ID,
		From: registry.StatusHealthy, To: registry.StatusZombie, HeartbeatAt: a.HeartbeatAt})
	if err != nil || ok {
		t.Errorf("SetAgentStatus with another tenant = %v, %v; want false, nil", ok, err)
	}
	if ids := domListIDs(t, ctx, s, "ten_b", ""); len(ids) != 0 {
		t.Errorf("ListAgents(ten_b) = %v, want none", ids)
	}
	if ids := domListIDs(t, ctx, s, "ten_b", "run"); len(ids) != 0 {
		t.Errorf("ListAgents(ten_b, run) = %v, want none", ids)
	}
	cands, err := s.RoutingCandidates(ctx, "ten_b", "run", time.Time{}, 10)
	if err != nil || cands != nil {
		t.Errorf("RoutingCandidates(ten_b) = %v, %v; want nil, nil", cands, err)
	}
	if diff := gocmp.Diff(storedAgent(a), domGetAgent(t, ctx, s, "ten_a", a.ID)); diff != "" {
		t.Errorf("agent after another tenant's attempts (-want +got):\n%s", diff)
	}
}

func testAgentList(t *testing.T, open func(t *testing.T) DomainStore) {
	s := open(t)
	ctx := t.Context()
	domCreateTenants(t, s, domTenant("ten_a", "a", base), domTenant("ten_b", "b", base))
	whole := base.Truncate(time.Second)
	// Inserted out of order; three share a creation time with IDs whose byte order ("B" < "a")
	// differs from a case-insensitive one. Another tenant's agents interleave in time.
	in := []registry.Agent{
		domAgent("ten_a", "agt_d", "d", whole.Add(2*time.Second), "x.run"),
		domAgent("ten_a", "agt_c", "c", whole.Add(500*time.Millisecond), "y.run"),
		domAgent("ten_a", "agt_a", "a", whole, "x.run", "y.run"),
		domAgent("ten_a", "agt_B", "b-upper", whole, "x.run"),
		domAgent("ten_a", "agt_b", "b", whole),
		domAgent("ten_a", "agt_e", "e", whole.Add(-time.Hour), "x.run"),
		domAgent("ten_b", "agt_o1", "o1", whole, "x.run"),
		domAgent("ten_b", "agt_o2", "o2", whole.Add(time.Second), "x.run"),
	}
	domCreateAgents(t, s, in...)
	byID := map[string]registry.Agent{}
	for _, a := range in {
		byID[a.ID] = storedAgent(a)
	}
	all := []string{"agt_e", "agt_B", "agt_a", "agt_b", "agt_c", "agt_d"}
	xRun := []string{"agt_e", "agt_B", "agt_a", "agt_d"}
	cursor := func(id string) *registry.Cursor { c := registry.CursorOf(byID[id]); return &c }

	tests := []struct {
		name string
		q    registry.ListQuery
		want []string
	}{
		{"all", registry.ListQuery{Limit: 100}, all},
		{"limit", registry.ListQuery{Limit: 2}, all[:2]},
		{"after a tie", registry.ListQuery{After: cursor("agt_B"), Limit: 100}, all[2:]},
		{"between two IDs of a tie", registry.ListQuery{After: &registry.Cursor{CreatedAt: whole, ID: "agt_Z"}, Limit: 100}, all[2:]},
		{"after the last", registry.ListQuery{After: cursor("agt_d"), Limit: 100}, []string{}},
		{"limit zero", registry.ListQuery{Limit: 0}, []string{}},
		{"capability", registry.ListQuery{Capability: "x.run", Limit: 100}, xRun},
		{"capability with limit", registry.ListQuery{Capability: "x.run", Limit: 3}, xRun[:3]},
		{"capability after a tie", registry.ListQuery{Capability: "x.run", After: cursor("agt_B"), Limit: 100}, xRun[2:]},
		{"capability after an agent without it", registry.ListQuery{Capability: "x.run", After: cursor("agt_b"), Limit: 100}, []string{"agt_d"}},
		{"capability is matched exactly", registry.ListQuery{Capability: "x", Limit: 100}, []string{}},
		{"unknown capability", registry.ListQuery{Capability: "z.run", Limit: 100}, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.ListAgents(ctx, "ten_a", tt.q)
			if err != nil {
				t.Fatalf("ListAgents: %v", err)
			}
			if got == nil {
				t.Fatal("ListAgents = nil, want a non-nil slice")
			}
			var want []registry.Agent
			for _, id := range tt.want {
				want = append(want, byID[id])
			}
			if want == nil {
				want = []registry.Agent{}
			}
			if diff := gocmp.Diff(want, got); diff != "" {
				t.Errorf("ListAgents (-want +got):\n%s", diff)
			}
		})
	}

	for _, capability := range []string{"", "x.run"} {
		t.Run(fmt.Sprintf("paging by capability %q visits every agent once", capability), func(t *testing.T) {
			var (
				got   []string
				after *registry.Cursor
			)
			for range len(in) + 1 {
				page, err := s.ListAgents(ctx, "ten_a", registry.ListQuery{Capability: capability, After: after, Limit: 2})
				if err != nil {
					t.Fatalf("ListAgents: %v", err)
				}
				if len(page) == 0 {
					break
				}
				got = append(got, domAgentIDs(page)...)
				c := registry.CursorOf(page[len(page)-1])
				after = &c
			}
			want := all
			if capability != "" {
				want = xRun
			}
			if diff := gocmp.Diff(want, got); diff != "" {
				t.Errorf("pages (-want +got):\n%s", diff)
			}
		})
	}
}

func testAgentUpdate(t *testing.T, open func(t *testing.T) DomainStore) {
	ctx := t.Context()
	setup := func(t *testing.T) (DomainStore, registry.Agent) {
		s := open(t)
		domCreateTenants(t, s, domTenant("ten_a", "a", base))
		orig := domAgent("ten_a", "agt_1", "one", base, "x.run", "y.run")
		orig.Status = registry.StatusStale
		orig.HeartbeatAt = base.Add(time.Minute)
		orig.Load = registry.Load{InFlight: domPtr[int64](4)}
		domCreateAgents(t, s, orig, domAgent("ten_a", "agt_2", "two", base.Add(time.Second), "x.run"))
		return s, orig
	}
	// next replaces every registration field, and also carries live fields and a creation time
	// UpdateAgent must not write.
	next := func(orig registry.Agent) registry.Agent {
		n := orig
		n.Name = "one-renamed"
		n.Version = "2.0.0"
		n.Capabilities = []registry.Capability{{Name: "y.run", Description: "now described"}, {Name: "z.run"}}
		n.Endpoint = "http://one.internal:8080/"
		n.Labels = map[string]string{"tier": "silver"}
		n.Metadata = map[string]any{"owner": "team-b"}
		n.Criticality = registry.CriticalityEssential
		n.UpdatedAt = base.Add(time.Hour)
		n.Revision = orig.Revision + 1
		n.Status = registry.StatusZombie
		n.HeartbeatAt = base.Add(-time.Hour)
		n.Load = registry.Load{}
		n.CreatedAt = base.Add(24 * time.Hour)
		return n
	}

	t.Run("writes the registration only", func(t *testing.T) {
		s, orig := setup(t)
		n := next(orig)
		if err := s.UpdateAgent(ctx, n, orig.Revision); err != nil {
			t.Fatalf("UpdateAgent: %v", err)
		}
		want := n
		want.Status, want.HeartbeatAt, want.Load, want.CreatedAt = orig.Status, orig.HeartbeatAt, orig.Load, orig.CreatedAt
		if diff := gocmp.Diff(storedAgent(want), domGetAgent(t, ctx, s, "ten_a", orig.ID)); diff != "" {
			t.Errorf("agent (-want +got):\n%s", diff)
		}
		// The capability rows follow: x.run is gone, z.run is new, y.run stays.
		for _, c := range []struct {
			capability string
			want       []string
		}{
			{"x.run", []string{"agt_2"}},
			{"y.run", []string{"agt_1"}},
			{"z.run", []string{"agt_1"}},
		} {
			if diff := gocmp.Diff(c.want, domListIDs(t, ctx, s, "ten_a", c.capability)); diff != "" {
				t.Errorf("ListAgents(%s) (-want +got):\n%s", c.capability, diff)
			}
		}
		cands, err := s.RoutingCandidates(ctx, "ten_a", "z.run", time.Time{}, 10)
		if err != nil || len(cands) != 1 || cands[0].Agent.ID != orig.ID {
			t.Errorf("RoutingCandidates(z.run) = %v, %v; want agt_1", cands, err)
		}
		// The old name is free again.
		domCreateAgents(t, s, domAgent("ten_a", "agt_3", "one", base.Add(2*time.Second)))
	})

	tests := []struct {
		name     string
		mutate   func(registry.Agent) registry.Agent
		prev     int64
		code     errs.Code
		stale    bool // wraps registry.ErrPreconditionFailed
		tenantID string
	}{
		{name: "stale revision", prev: 7, code: errs.Conflict, stale: true},
		{name: "unknown agent", mutate: func(a registry.Agent) registry.Agent { a.ID = "agt_nope"; return a }, prev: 1, code: errs.NotFound},
		{name: "name taken", mutate: func(a registry.Agent) registry.Agent { a.Name = "two"; return a }, prev: 1, code: errs.Conflict},
		{name: "name taken and stale revision", mutate: func(a registry.Agent) registry.Agent { a.Name = "two"; return a }, prev: 7, code: errs.Conflict, stale: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, orig := setup(t)
			n := next(orig)
			if tt.mutate != nil {
				n = tt.mutate(n)
			}
			err := s.UpdateAgent(ctx, n, tt.prev)
			domCode(t, "UpdateAgent", err, tt.code)
			if got := errors.Is(err, registry.ErrPreconditionFailed); got != tt.stale {
				t.Errorf("UpdateAgent error %v: wraps ErrPreconditionFailed = %v, want %v", err, got, tt.stale)
			}
			if diff := gocmp.Diff(storedAgent(orig), domGetAgent(t, ctx, s, "ten_a", orig.ID)); diff != "" {
				t.Errorf("agent after a refused update (-want +got):\n%s", diff)
			}
			if diff := gocmp.Diff([]string{"agt_1"}, domListIDs(t, ctx, s, "ten_a", "y.run")); diff != "" {
				t.Errorf("capability rows after a refused update (-want +got):\n%s", diff)
			}
			if ids := domListIDs(t, ctx, s, "ten_a", "z.run"); len(ids) != 0 {
				t.Errorf("a refused update added capability rows: %v", ids)
			}
		})
	}
}

func testAgentDelete(t *testing.T, open func(t *testing.T) DomainStore) {
	s := open(t)
	ctx := t.Context()
	domCreateTenants(t, s, domTenant("ten_a", "a", base), domTenant("ten_b", "b", base))
	a := domAgent("ten_a", "agt_1", "one", base, "run")
	a.Revision = 4
	keep := domAgent("ten_a", "agt_2", "two", base.Add(time.Second), "run")
	domCreateAgents(t, s, a, keep)
	domCreateKeys(t, s, domKey("ak_agent", "ten_a", "agt_1"), domKey("ak_keep", "ten_a", "agt_2"), domKey("ak_tenant", "ten_a", ""))

	err := s.DeleteAgent(ctx, "ten_a", a.ID, 3)
	domCode(t, "DeleteAgent with a stale revision", err, errs.Conflict)
	if !errors.Is(err, registry.ErrPreconditionFailed) {
		t.Errorf("DeleteAgent with a stale revision: %v does not wrap ErrPreconditionFailed", err)
	}
	domCode(t, "DeleteAgent of another tenant", s.DeleteAgent(ctx, "ten_b", a.ID, 4), errs.NotFound)
	domCode(t, "DeleteAgent of an unknown agent", s.DeleteAgent(ctx, "ten_a", "agt_nope", 1), errs.NotFound)
	domGetAgent(t, ctx, s, "ten_a", a.ID)

	if err := s.DeleteAgent(ctx, "ten_a", a.ID, 4); err != nil {
		t.Fatalf("DeleteAgent: %v", err)
	}
	_, err = s.AgentByID(ctx, "ten_a", a.ID)
	domCode(t, "AgentByID after DeleteAgent", err, errs.NotFound)
	if diff := gocmp.Diff([]string{"agt_2"}, domListIDs(t, ctx, s, "ten_a", "run")); diff != "" {
		t.Errorf("ListAgents(run) after DeleteAgent (-want +got):\n%s", diff)
	}
	_, err = s.APIKey(ctx, "ak_agent")
	domCode(t, "APIKey of the deleted agent", err, errs.NotFound)
	for _, id := range []string{"ak_keep", "ak_tenant"} {
		if _, err := s.APIKey(ctx, id); err != nil {
			t.Errorf("APIKey(%s) after deleting another agent: %v", id, err)
		}
	}
	domCode(t, "second DeleteAgent", s.DeleteAgent(ctx, "ten_a", a.ID, 4), errs.NotFound)
	// The name is free again, and the new agent inherits no capability rows.
	domCreateAgents(t, s, domAgent("ten_a", "agt_3", "one", base.Add(2*time.Second)))
	if diff := gocmp.Diff([]string{"agt_2"}, domListIDs(t, ctx, s, "ten_a", "run")); diff != "" {
		t.Errorf("ListAgents(run) after re-registering the name (-want +got):\n%s", diff)
	}
}

func testAgentHeartbeat(t *testing.T, open func(t *testing.T) DomainStore) {
	s := open(t)
	ctx := t.Context()
	domCreateTenants(t, s, domTenant("ten_a", "a", base))
	a := domAgent("ten_a", "agt_1", "one", base, "run")
	a.Status = registry.StatusStale
	a.Load = registry.Load{InFlight: domPtr[int64](9), P50Ms: domPtr(1.0), FreeCapacity: domPtr[int64](2)}
	a.Revision = 5
	a.UpdatedAt = base.Add(time.Second)
	unset := domAgent("ten_a", "agt_2", "two", base)
	unset.Status = ""
	domCreateAgents(t, s, a, unset)

	beat := func(t *testing.T, id string, at time.Time, load registry.Load, want registry.Status) {
		t.Helper()
		prev, err := s.Heartbeat(ctx, "ten_a", id, at, load)
		if err != nil {
			t.Fatalf("Heartbeat: %v", err)
		}
		if prev != want {
			t.Errorf("Heartbeat returned previous status %q, want %q", prev, want)
		}
	}

	at1 := base.Add(10 * time.Minute)
	load1 := registry.Load{P95Ms: domPtr(42.5)} // replaces the whole load: InFlight and the rest go
	beat(t, a.ID, at1, load1, registry.StatusStale)
	want := a
	want.HeartbeatAt, want.Load, want.Status = at1, load1, registry.StatusHealthy
	if diff := gocmp.Diff(storedAgent(want), domGetAgent(t, ctx, s, "ten_a", a.ID)); diff != "" {
		t.Errorf("agent after Heartbeat (-want +got):\n%s", diff)
	}

	at2 := at1.Add(time.Second)
	beat(t, a.ID, at2, registry.Load{}, registry.StatusHealthy)
	ok, err := s.SetAgentStatus(ctx, registry.StatusChange{TenantID: "ten_a", AgentID: a.ID,
		From: registry.StatusHealthy, To: registry.StatusZombie, HeartbeatAt: stored(at2)})
	if err != nil || !ok {
		t.Fatalf("SetAgentStatus = %v, %v; want true, nil", ok, err)
	}
	beat(t, a.ID, at2.Add(time.Second), registry.Load{}, registry.StatusZombie)
	beat(t, unset.ID, at2, registry.Load{}, "")

	// A heartbeat does not bump the revision: an update with the revision read before succeeds.
	upd := a
	upd.Version, upd.Revision, upd.UpdatedAt = "1.0.1", a.Revision+1, base.Add(time.Hour)
	if err := s.UpdateAgent(ctx, upd, a.Revision); err != nil {
		t.Errorf("UpdateAgent after heartbeats with the revision read before them: %v", err)
	}
	_, err = s.Heartbeat(ctx, "ten_a", "agt_nope", at2, registry.Load{})
	domCode(t, "Heartbeat of an unknown agent", err, errs.NotFound)
}

func testAgentSetStatus(t *testing.T, open func(t *testing.T) DomainStore) {
	ctx := t.Context()
	hb := base.Add(time.Minute)
	tests := []struct {
		name       string
		change     registry.StatusChange
		want       bool
		wantStatus registry.Status
	}{
		{"matching", registry.StatusChange{TenantID: "ten_a", AgentID: "agt_1", From: registry.StatusHealthy, To: registry.StatusStale, HeartbeatAt: stored(hb)}, true, registry.StatusStale},
		{"other status", registry.StatusChange{TenantID: "ten_a", AgentID: "agt_1", From: registry.StatusStale, To: registry.StatusZombie, HeartbeatAt: stored(hb)}, false, registry.StatusHealthy},
		{"other heartbeat", registry.StatusChange{TenantID: "ten_a", AgentID: "agt_1", From: registry.StatusHealthy, To: registry.StatusStale, HeartbeatAt: stored(hb).Add(time.Microsecond)}, false, registry.StatusHealthy},
		{"unknown agent", registry.StatusChange{TenantID: "ten_a", AgentID: "agt_nope", From: registry.StatusHealthy, To: registry.StatusStale, HeartbeatAt: stored(hb)}, false, registry.StatusHealthy},
		{"another tenant", registry.StatusChange{TenantID: "ten_b", AgentID: "agt_1", From: registry.StatusHealthy, To: registry.StatusStale, HeartbeatAt: stored(hb)}, false, registry.StatusHealthy},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			domCreateTenants(t, s, domTenant("ten_a", "a", base), domTenant("ten_b", "b", base))
			a := domAgent("ten_a", "agt_1", "one", base, "run")
			a.HeartbeatAt = hb
			domCreateAgents(t, s, a)
			ok, err := s.SetAgentStatus(ctx, tt.change)
			if err != nil {
				t.Fatalf("SetAgentStatus: %v", err)
			}
			if ok != tt.want {
				t.Errorf("SetAgentStatus = %v, want %v", ok, tt.want)
			}
			want := storedAgent(a)
			want.Status = tt.wantStatus
			if diff := gocmp.Diff(want, domGetAgent(t, ctx, s, "ten_a", a.ID)); diff != "" {
				t.Errorf("agent (-want +got):\n%s", diff)
			}
		})
	}
}

func testAgentSweep(t *testing.T, open func(t *testing.T) DomainStore) {
	s := open(t)
	ctx := t.Context()
	domCreateTenants(t, s, domTenant("ten_a", "a", base), domTenant("ten_b", "b", base))
	now := base.Add(time.Hour)
	ttl := registry.TTLs{Stale: 30 * time.Second, Zombie: 2 * time.Minute}
	staleAt, zombieAt := stored(now.Add(-ttl.Stale)), stored(now.Add(-ttl.Zombie))
	var (
		in  []registry.Agent
		due []string
	)
	add := func(tenantID, id string, hb time.Time, status registry.Status, isDue bool) {
		a := domAgent(tenantID, id, id[4:], base.Add(time.Duration(len(in))*time.Second))
		a.HeartbeatAt, a.Status = hb, status
		in = append(in, a)
		if isDue {
			due = append(due, id)
		}
	}
	// Registered in this order, so the due ones are expected in it too.
	add("ten_a", "agt_h1", now.Add(-time.Second), registry.StatusHealthy, false)
	add("ten_a", "agt_h2", now.Add(-time.Second), registry.StatusStale, true)
	add("ten_a", "agt_h3", now.Add(-time.Second), registry.StatusZombie, true)
	add("ten_a", "agt_h4", staleAt, registry.StatusHealthy, true) // exactly at staleAt: stale
	add("ten_a", "agt_h5", staleAt.Add(time.Microsecond), registry.StatusHealthy, false)
	add("ten_a", "agt_s1", now.Add(-time.Minute), registry.StatusStale, false)
	add("ten_a", "agt_s2", now.Add(-time.Minute), registry.StatusHealthy, true)
	add("ten_a", "agt_s3", zombieAt, registry.StatusStale, true) // exactly at zombieAt: zombie
	add("ten_a", "agt_z1", now.Add(-time.Hour), registry.StatusZombie, false)
	add("ten_a", "agt_z2", now.Add(-time.Hour), registry.StatusHealthy, true)
	add("ten_a", "agt_z3", time.Time{}, registry.StatusStale, true) // no heartbeat ever
	add("ten_a", "agt_u1", now.Add(-time.Second), "", true)
	add("ten_b", "agt_b1", now.Add(-time.Hour), registry.StatusHealthy, true)
	add("ten_b", "agt_b2", now.Add(-time.Hour), registry.StatusZombie, false)
	domCreateAgents(t, s, in...)
	byID := map[string]registry.Agent{}
	for _, a := range in {
		byID[a.ID] = storedAgent(a)
	}
	var want []registry.Agent
	for _, id := range due {
		want = append(want, byID[id])
	}

	got, err := s.SweepCandidates(ctx, staleAt, zombieAt, 100)
	if err != nil {
		t.Fatalf("SweepCandidates: %v", err)
	}
	if diff := gocmp.Diff(want, got); diff != "" {
		t.Errorf("SweepCandidates (-want +got):\n%s", diff)
	}
	// Every candidate has a transition, and every agent with one is a candidate.
	var all []registry.Agent
	for _, a := range in {
		all = append(all, byID[a.ID])
	}
	if diff := gocmp.Diff(registry.Sweep(all, now, ttl), registry.Sweep(got, now, ttl)); diff != "" {
		t.Errorf("transitions of the candidates differ from those of every agent (-all +candidates):\n%s", diff)
	}

	got, err = s.SweepCandidates(ctx, staleAt, zombieAt, 3)
	if err != nil {
		t.Fatalf("SweepCandidates with limit: %v", err)
	}
	if diff := gocmp.Diff(want[:3], got); diff != "" {
		t.Errorf("SweepCandidates with limit 3 (-want +got):\n%s", diff)
	}

	// Storing every change leaves no candidate.
	for _, c := range registry.Sweep(got, now, ttl) {
		if ok, err := s.SetAgentStatus(ctx, c); err != nil || !ok {
			t.Fatalf("SetAgentStatus(%+v) = %v, %v", c, ok, err)
		}
	}
	for {
		batch, err := s.SweepCandidates(ctx, staleAt, zombieAt, 4)
		if err != nil {
			t.Fatalf("SweepCandidates: %v", err)
		}
		if len(batch) == 0 {
			break
		}
		for _, c := range registry.Sweep(batch, now, ttl) {
			if ok, err := s.SetAgentStatus(ctx, c); err != nil || !ok {
				t.Fatalf("SetAgentStatus(%+v) = %v, %v", c, ok, err)
			}
		}
	}
	if got, err := s.SweepCandidates(ctx, staleAt, zombieAt, 100); err != nil || got != nil {
		t.Errorf("SweepCandidates after storing every change = %v, %v; want nil, nil", got, err)
	}
}

func testAgentRouting(t *testing.T, open func(t *testing.T) DomainStore) {
	s := open(t)
	ctx := t.Context()
	// Tenant IDs of the real shape, so that registry.Service accepts them below.
	const tenA, tenB, tenC = "ten_0000000000000000000000000a", "ten_0000000000000000000000000b", "ten_0000000000000000000000000c"
	suspended := domTenant(tenB, "b", base)
	suspended.Status = tenant.StatusSuspended
	domCreateTenants(t, s, domTenant(tenA, "a", base), suspended, domTenant(tenC, "c", base))
	now := base.Add(time.Hour)
	after := stored(now.Add(-2 * time.Minute))
	agent := func(tenantID, id string, created int, hb time.Time, caps ...string) registry.Agent {
		a := domAgent(tenantID, id, id[4:], base.Add(time.Duration(created)*time.Second), caps...)
		a.HeartbeatAt = hb
		return a
	}
	in := []registry.Agent{
		agent(tenA, "agt_a5", 1, now.Add(-time.Minute), "run", "other"),
		agent(tenA, "agt_a1", 2, now.Add(-10*time.Second), "run"),
		agent(tenA, "agt_a2", 3, after, "run"), // exactly heartbeatAfter: not after it
		agent(tenA, "agt_a3", 4, now.Add(-time.Hour), "run"),
		agent(tenA, "agt_a4", 5, now, "other"),
		agent(tenA, "agt_a6", 6, now, "run.fast"),
		agent(tenB, "agt_b1", 7, now, "run"),
		agent(tenC, "agt_c1", 0, now, "run"),
	}
	domCreateAgents(t, s, in...)
	byID := map[string]registry.Agent{}
	for _, a := range in {
		byID[a.ID] = storedAgent(a)
	}
	candidates := func(tenantID string, limit int) []registry.Candidate {
		t.Helper()
		got, err := s.RoutingCandidates(ctx, tenantID, "run", after, limit)
		if err != nil {
			t.Fatalf("RoutingCandidates(%s): %v", tenantID, err)
		}
		// Any order is allowed.
		slices.SortFunc(got, func(x, y registry.Candidate) int {
			return cmp.Or(x.Agent.CreatedAt.Compare(y.Agent.CreatedAt), cmp.Compare(x.Agent.ID, y.Agent.ID))
		})
		return got
	}
	want := func(status tenant.Status, ids ...string) []registry.Candidate {
		var out []registry.Candidate
		for _, id := range ids {
			out = append(out, registry.Candidate{Agent: byID[id], TenantStatus: status})
		}
		return out
	}

	if diff := gocmp.Diff(want(tenant.StatusActive, "agt_a5", "agt_a1"), candidates(tenA, 100)); diff != "" {
		t.Errorf("RoutingCandidates(ten_a) (-want +got):\n%s", diff)
	}
	if diff := gocmp.Diff(want(tenant.StatusSuspended, "agt_b1"), candidates(tenB, 100)); diff != "" {
		t.Errorf("RoutingCandidates(suspended ten_b) (-want +got):\n%s", diff)
	}
	if got := candidates(tenA, 1); len(got) != 1 {
		t.Errorf("RoutingCandidates with limit 1 = %d candidates, want 1", len(got))
	}

	// Suspending a tenant shows in the very next query.
	susp := domTenant(tenA, "a", base)
	susp.Status, susp.Version = tenant.StatusSuspended, 2
	if err := s.UpdateTenant(ctx, susp, 1); err != nil {
		t.Fatalf("UpdateTenant: %v", err)
	}
	if diff := gocmp.Diff(want(tenant.StatusSuspended, "agt_a5", "agt_a1"), candidates(tenA, 100)); diff != "" {
		t.Errorf("RoutingCandidates(ten_a) after suspension (-want +got):\n%s", diff)
	}

	// Through the registry's own rule: a suspended tenant routes nothing, an active one its live
	// agents only.
	svc, err := registry.NewService(s, registry.Config{TTL: registry.TTLs{Stale: 30 * time.Second, Zombie: 2 * time.Minute},
		Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := svc.Routable(ctx, tenA, "run"); err != nil || len(got) != 0 {
		t.Errorf("Routable(suspended ten_a) = %v, %v; want none", domAgentIDs(got), err)
	}
	if got, err := svc.Routable(ctx, tenC, "run"); err != nil || !slices.Equal(domAgentIDs(got), []string{"agt_c1"}) {
		t.Errorf("Routable(ten_c) = %v, %v; want [agt_c1]", domAgentIDs(got), err)
	}
}

// agentScenario runs a sequence of registry writes and reads with ctx and returns what each
// returned, so that the same sequence can be compared inside and outside a transaction.
func agentScenario(ctx context.Context, s DomainStore) (any, error) {
	type result struct {
		Prev       []registry.Status
		Set        bool
		Agent      registry.Agent
		Listed     []string
		Candidates []string
		Sweep      []string
		Count      int64
		Deleted    []string
	}
	var r result
	for _, a := range []registry.Agent{
		domAgent("ten_a", "agt_1", "one", base, "run"),
		domAgent("ten_a", "agt_2", "two", base.Add(time.Second), "run"),
	} {
		if err := s.CreateAgent(ctx, a); err != nil {
			return nil, err
		}
	}
	for _, at := range []time.Time{base.Add(time.Minute), base.Add(2 * time.Minute)} {
		prev, err := s.Heartbeat(ctx, "ten_a", "agt_1", at, registry.Load{InFlight: domPtr[int64](1)})
		if err != nil {
			return nil, err
		}
		r.Prev = append(r.Prev, prev)
	}
	var err error
	r.Set, err = s.SetAgentStatus(ctx, registry.StatusChange{TenantID: "ten_a", AgentID: "agt_1",
		From: registry.StatusHealthy, To: registry.StatusStale, HeartbeatAt: stored(base.Add(2 * time.Minute))})
	if err != nil {
		return nil, err
	}
	upd := domAgent("ten_a", "agt_2", "two", base.Add(time.Second), "walk")
	upd.Revision = 2
	if err := s.UpdateAgent(ctx, upd, 1); err != nil {
		return nil, err
	}
	if r.Agent, err = s.AgentByID(ctx, "ten_a", "agt_1"); err != nil {
		return nil, err
	}
	listed, err := s.ListAgents(ctx, "ten_a", registry.ListQuery{Capability: "walk", Limit: 10})
	if err != nil {
		return nil, err
	}
	r.Listed = domAgentIDs(listed)
	cands, err := s.RoutingCandidates(ctx, "ten_a", "run", base, 10)
	if err != nil {
		return nil, err
	}
	for _, c := range cands {
		r.Candidates = append(r.Candidates, c.Agent.ID+"/"+string(c.TenantStatus))
	}
	sweep, err := s.SweepCandidates(ctx, base.Add(90*time.Second), base, 10)
	if err != nil {
		return nil, err
	}
	r.Sweep = domAgentIDs(sweep)
	if err := s.DeleteAgent(ctx, "ten_a", "agt_2", 2); err != nil {
		return nil, err
	}
	if r.Count, err = s.CountAgents(ctx, "ten_a"); err != nil {
		return nil, err
	}
	if r.Deleted, err = s.DeleteTenantAgents(ctx, "ten_a"); err != nil {
		return nil, err
	}
	return r, nil
}

func testAgentTransactions(t *testing.T, open func(t *testing.T) DomainStore) {
	ctx := t.Context()
	setup := func(t *testing.T) DomainStore {
		s := open(t)
		domCreateTenants(t, s, domTenant("ten_a", "a", base))
		return s
	}
	direct, err := agentScenario(ctx, setup(t))
	if err != nil {
		t.Fatalf("scenario without a transaction: %v", err)
	}

	t.Run("same results inside a transaction", func(t *testing.T) {
		s := setup(t)
		var inTx any
		err := s.InTx(ctx, func(ctx context.Context) error {
			var err error
			inTx, err = agentScenario(ctx, s)
			return err
		})
		if err != nil {
			t.Fatalf("InTx: %v", err)
		}
		if diff := gocmp.Diff(direct, inTx); diff != "" {
			t.Errorf("scenario results (-direct +in a transaction):\n%s", diff)
		}
	})

	t.Run("rollback leaves nothing", func(t *testing.T) {
		s := setup(t)
		domCreateAgents(t, s, domAgent("ten_a", "agt_0", "zero", base.Add(-time.Hour), "run"))
		boom := errors.New("boom")
		err := s.InTx(ctx, func(ctx context.Context) error {
			for _, a := range []registry.Agent{
				domAgent("ten_a", "agt_1", "one", base, "run"),
				domAgent("ten_a", "agt_2", "two", base.Add(time.Second), "walk"),
			} {
				if err := s.CreateAgent(ctx, a); err != nil {
					return err
				}
			}
			if _, err := s.Heartbeat(ctx, "ten_a", "agt_0", base, registry.Load{InFlight: domPtr[int64](1)}); err != nil {
				return err
			}
			upd := domAgent("ten_a", "agt_0", "zero-renamed", base.Add(-time.Hour), "walk")
			upd.Revision = 2
			if err := s.UpdateAgent(ctx, upd, 1); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("InTx = %v, want the callback's error", err)
		}
		if diff := gocmp.Diff([]string{"agt_0"}, domListIDs(t, ctx, s, "ten_a", "")); diff != "" {
			t.Errorf("agents after rollback (-want +got):\n%s", diff)
		}
		if ids := domListIDs(t, ctx, s, "ten_a", "walk"); len(ids) != 0 {
			t.Errorf("capability rows survived the rollback: %v", ids)
		}
		if diff := gocmp.Diff(storedAgent(domAgent("ten_a", "agt_0", "zero", base.Add(-time.Hour), "run")),
			domGetAgent(t, ctx, s, "ten_a", "agt_0")); diff != "" {
			t.Errorf("agent after rollback (-want +got):\n%s", diff)
		}
	})
}

// testAgentConcurrency has 50 goroutines register, heartbeat, update and delete agents of one
// tenant at once, and then checks the table: every surviving agent's revision is one plus its
// successful updates, its capability rows are those of its last update, its heartbeat is the last
// one sent (updates never overwrite heartbeats, heartbeats never overwrite registrations), each
// deleted agent was deleted once, and one contested name was registered once.
//
// Goroutines: 20 updaters (two per pool agent, five successful updates each, re-reading after
// every lost compare-and-set, every other one inside a transaction), 10 heartbeaters (one per pool
// agent, ten heartbeats each with increasing times), 10 deleters (five per doomed pool agent) and
// 10 registrars (one new agent each, and one attempt each at a shared name).
func testAgentConcurrency(t *testing.T, open func(t *testing.T) DomainStore) {
	s := open(t)
	ctx := t.Context()
	domCreateTenants(t, s, domTenant("ten_a", "a", base))
	const (
		pool, doomedFrom        = 10, 8 // agents 8 and 9 are deleted
		updaters, updatesEach   = 20, 5
		heartbeaters, beatsEach = pool, 10
		deleters, registrars    = 10, 10
		revCap                  = "rev.%d"
	)
	poolID := func(i int) string { return fmt.Sprintf("agt_pool%02d", i) }
	for i := range pool {
		domCreateAgents(t, s, domAgent("ten_a", poolID(i), fmt.Sprintf("pool-%d", i), base.Add(time.Duration(i)*time.Millisecond),
			"work", fmt.Sprintf(revCap, 1)))
	}

	var (
		mu        sync.Mutex
		updated   = map[string]int{}
		lastBeat  = map[string]time.Time{}
		deleted   = map[string]int{}
		contested int
		wg        sync.WaitGroup
	)
	errc := make(chan error, updaters+heartbeaters+deleters+registrars)
	start := make(chan struct{})

	// update bumps agent id once, retrying lost compare-and-sets; false means the agent is gone.
	update := func(id string, inTx bool) (bool, error) {
		for {
			var gone bool
			attempt := func(ctx context.Context) error {
				cur, err := s.AgentByID(ctx, "ten_a", id)
				if errs.Is(err, errs.NotFound) {
					gone = true
					return nil
				}
				if err != nil {
					return err
				}
				next := cur
				next.Revision = cur.Revision + 1
				next.Capabilities = []registry.Capability{{Name: "work"}, {Name: fmt.Sprintf(revCap, next.Revision)}}
				next.Labels = map[string]string{"rev": fmt.Sprint(next.Revision)}
				next.UpdatedAt = base.Add(time.Duration(next.Revision) * time.Second)
				// Live fields as read: a lost update of them would show in the final check.
				err = s.UpdateAgent(ctx, next, cur.Revision)
				if errs.Is(err, errs.NotFound) {
					gone = true
					return nil
				}
				return err
			}
			var err error
			if inTx {
				err = s.InTx(ctx, attempt)
			} else {
				err = attempt(ctx)
			}
			switch {
			case gone:
				return false, nil
			case err == nil:
				return true, nil
			case !errors.Is(err, registry.ErrPreconditionFailed):
				return false, err
			}
		}
	}

	for u := range updaters {
		id := poolID(u % pool)
		wg.Go(func() {
			<-start
			for range updatesEach {
				ok, err := update(id, u%2 == 1)
				if err != nil {
					errc <- fmt.Errorf("update %s: %w", id, err)
					return
				}
				if !ok {
					return
				}
				mu.Lock()
				updated[id]++
				mu.Unlock()
			}
		})
	}
	for h := range heartbeaters {
		id := poolID(h)
		wg.Go(func() {
			<-start
			for k := 1; k <= beatsEach; k++ {
				at := stored(base.Add(time.Duration(k) * time.Minute))
				_, err := s.Heartbeat(ctx, "ten_a", id, at, registry.Load{InFlight: domPtr(int64(k))})
				if errs.Is(err, errs.NotFound) {
					return
				}
				if err != nil {
					errc <- fmt.Errorf("heartbeat %s: %w", id, err)
					return
				}
				mu.Lock()
				lastBeat[id] = at
				mu.Unlock()
			}
		})
	}
	for d := range deleters {
		id := poolID(doomedFrom + d%(pool-doomedFrom))
		wg.Go(func() {
			<-start
			for {
				cur, err := s.AgentByID(ctx, "ten_a", id)
				if errs.Is(err, errs.NotFound) {
					return
				}
				if err != nil {
					errc <- fmt.Errorf("read %s to delete: %w", id, err)
					return
				}
				err = s.DeleteAgent(ctx, "ten_a", id, cur.Revision)
				switch {
				case err == nil:
					mu.Lock()
					deleted[id]++
					mu.Unlock()
					return
				case errs.Is(err, errs.NotFound):
					return
				case !errors.Is(err, registry.ErrPreconditionFailed):
					errc <- fmt.Errorf("delete %s: %w", id, err)
					return
				}
			}
		})
	}
	for r := range registrars {
		wg.Go(func() {
			<-start
			created := base.Add(time.Hour + time.Duration(r)*time.Millisecond)
			if err := s.CreateAgent(ctx, domAgent("ten_a", fmt.Sprintf("agt_new%02d", r), fmt.Sprintf("new-%d", r), created, "work")); err != nil {
				errc <- fmt.Errorf("register new-%d: %w", r, err)
				return
			}
			err := s.CreateAgent(ctx, domAgent("ten_a", fmt.Sprintf("agt_contested%02d", r), "contested", created, "work"))
			switch {
			case err == nil:
				mu.Lock()
				contested++
				mu.Unlock()
			case !errs.Is(err, errs.Conflict):
				errc <- fmt.Errorf("register contested: %w", err)
			}
		})
	}
	close(start)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if t.Failed() {
		return
	}

	var survivors []string
	for i := range doomedFrom {
		id := poolID(i)
		survivors = append(survivors, id)
		a := domGetAgent(t, ctx, s, "ten_a", id)
		if want := updaters / pool * updatesEach; updated[id] != want {
			t.Errorf("%s: %d successful updates, want %d", id, updated[id], want)
		}
		if a.Revision != int64(updated[id])+1 {
			t.Errorf("%s: revision %d after %d successful updates, want %d", id, a.Revision, updated[id], updated[id]+1)
		}
		wantCaps := []registry.Capability{{Name: "work"}, {Name: fmt.Sprintf(revCap, a.Revision)}}
		if diff := gocmp.Diff(wantCaps, a.Capabilities); diff != "" {
			t.Errorf("%s capabilities (-want +got):\n%s", id, diff)
		}
		wantLoad := registry.Load{InFlight: domPtr[int64](beatsEach)}
		if !a.HeartbeatAt.Equal(lastBeat[id]) || !gocmp.Equal(wantLoad, a.Load) || a.Status != registry.StatusHealthy {
			t.Errorf("%s: heartbeat %v, status %q, load diff (-want +got):\n%s\nwant the last heartbeat %v, healthy",
				id, a.HeartbeatAt, a.Status, gocmp.Diff(wantLoad, a.Load), lastBeat[id])
		}
	}
	for i := doomedFrom; i < pool; i++ {
		id := poolID(i)
		if _, err := s.AgentByID(ctx, "ten_a", id); !errs.Is(err, errs.NotFound) {
			t.Errorf("AgentByID(%s) after its deletion: %v, want NotFound", id, err)
		}
		if deleted[id] != 1 {
			t.Errorf("%s deleted %d times, want once", id, deleted[id])
		}
	}
	if contested != 1 {
		t.Errorf("the contested name was registered %d times, want once", contested)
	}
	for r := range registrars {
		survivors = append(survivors, fmt.Sprintf("agt_new%02d", r))
	}

	// The capability rows agree with the rows: every survivor offers "work" (the contested one
	// too), and the survivors' revision capability is theirs alone; no older revision's row
	// outlived its update.
	n, err := s.CountAgents(ctx, "ten_a")
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(len(survivors) + 1); n != want {
		t.Errorf("CountAgents = %d, want %d", n, want)
	}
	if got := domListIDs(t, ctx, s, "ten_a", "work"); len(got) != int(n) {
		t.Errorf("ListAgents(work) = %d agents, want %d", len(got), n)
	}
	finalRev := fmt.Sprintf(revCap, updaters/pool*updatesEach+1)
	if diff := gocmp.Diff(survivors[:doomedFrom], domListIDs(t, ctx, s, "ten_a", finalRev)); diff != "" {
		t.Errorf("ListAgents(%s) (-want +got):\n%s", finalRev, diff)
	}
	for rev := 1; rev <= updaters/pool*updatesEach; rev++ {
		if ids := domListIDs(t, ctx, s, "ten_a", fmt.Sprintf(revCap, rev)); len(ids) != 0 {
			t.Errorf("ListAgents(%s) = %v: capability rows of an older revision survived", fmt.Sprintf(revCap, rev), ids)
		}
	}
}
