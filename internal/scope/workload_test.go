package scope_test

import (
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nops-kernel/nops/internal/principal"
	"github.com/nops-kernel/nops/internal/scope"
)

var td = spiffeid.RequireTrustDomainFromString("nops.test")

const (
	tenantX = "ten_01jz8y3w6v6r3b5q8x9k2m4n7q"
	tenantY = "ten_01jz8y3w6v6r3b5q8x9k2m4n7r"
	agentA  = "agt_01jz8y3w6v6r3b5q8x9k2m4n7a"
	agentB  = "agt_01jz8y3w6v6r3b5q8x9k2m4n7b"
)

func agentID(tenant, agent string) spiffeid.ID {
	return spiffeid.RequireFromSegments(td, "tenant", tenant, "agent", agent)
}

func TestParseWorkload(t *testing.T) {
	a := agentID(tenantX, agentA)
	k := spiffeid.RequireFromSegments(td, "kernel", "node-1")
	for _, tc := range []struct {
		id   spiffeid.ID
		want scope.Workload
	}{
		{a, scope.Workload{ID: a, Kind: scope.KindAgent, Tenant: tenantX, Agent: agentA}},
		{k, scope.Workload{ID: k, Kind: scope.KindKernel, Node: "node-1"}},
	} {
		got, err := scope.ParseWorkload(tc.id, td)
		if err != nil {
			t.Fatalf("ParseWorkload(%s): %v", tc.id, err)
		}
		if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(x, y spiffeid.ID) bool { return x == y })); diff != "" {
			t.Errorf("ParseWorkload(%s) (-want +got):\n%s", tc.id, diff)
		}
	}

	refused := map[string]spiffeid.ID{
		"zero":              {},
		"foreign domain":    spiffeid.RequireFromSegments(spiffeid.RequireTrustDomainFromString("other.test"), "tenant", tenantX, "agent", agentA),
		"trust domain only": td.ID(),
		"tenant prefix":     agentID("tx_1", agentA),
		"agent prefix":      agentID(tenantX, "usr_1"),
		"bare prefixes":     agentID("ten_", "agt_"),
		"extra segment":     spiffeid.RequireFromSegments(td, "tenant", tenantX, "agent", agentA, "x"),
		"agents plural":     spiffeid.RequireFromSegments(td, "tenant", tenantX, "agents", agentA),
		"kernel deeper":     spiffeid.RequireFromSegments(td, "kernel", "a", "b"),
		"kernel empty":      spiffeid.RequireFromSegments(td, "kernel"),
		"spire style":       spiffeid.RequireFromSegments(td, "ns", "default", "sa", "web"),
	}
	for name, id := range refused {
		t.Run(name, func(t *testing.T) {
			if w, err := scope.ParseWorkload(id, td); err == nil {
				t.Errorf("ParseWorkload(%s) = %+v, want an error", id, w)
			}
		})
	}
}

func TestDefaultTable(t *testing.T) {
	table := scope.DefaultTable()
	if err := table.Validate(); err != nil {
		t.Fatal(err)
	}
	w, err := scope.ParseWorkload(agentID(tenantX, agentA), td)
	if err != nil {
		t.Fatal(err)
	}
	got, err := table.For(w)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"registry:heartbeat:" + tenantX, "registry:read:" + tenantX, "identity:renew:" + tenantX,
		"identity:read:" + tenantX, "invoke:*:" + tenantX, "invocations:read:" + tenantX,
	}
	if diff := cmp.Diff(want, scope.Strings(got)); diff != "" {
		t.Errorf("agent scopes (-want +got):\n%s", diff)
	}
	// An agent's grant never reaches another tenant, nor the operations it was not given.
	for _, need := range []string{"registry:read:" + tenantY, "invoke:x:" + tenantY, "registry:write:" + tenantX, "routing:write:" + tenantX, "registry:read:*"} {
		if scope.Grants(got, scope.MustParse(need)) {
			t.Errorf("an agent of %s is granted %s", tenantX, need)
		}
	}

	k, err := scope.ParseWorkload(spiffeid.RequireFromSegments(td, "kernel", "n1"), td)
	if err != nil {
		t.Fatal(err)
	}
	gotK, err := table.For(k)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"registry:read:*", "invoke:*:*", "invocations:read:*"}, scope.Strings(gotK)); diff != "" {
		t.Errorf("kernel scopes (-want +got):\n%s", diff)
	}
}

func TestTableValidateRefuses(t *testing.T) {
	for name, table := range map[string]scope.Table{
		"unknown kind":             {"robot": {"a:b:c"}},
		"invalid scope":            {scope.KindAgent: {"a:b"}},
		"placeholder in operation": {scope.KindAgent: {"invoke:{tenant}:x"}},
		"placeholder twice":        {scope.KindAgent: {"invoke:x:{tenant}{tenant}"}},
		"placeholder partial":      {scope.KindAgent: {"invoke:x:pre{tenant}"}},
		"kernel placeholder":       {scope.KindKernel: {"invoke:x:{tenant}"}},
	} {
		t.Run(name, func(t *testing.T) {
			if err := table.Validate(); err == nil {
				t.Error("Validate accepted an invalid table")
			}
		})
	}
}

func TestTableForDeduplicatesAndSkipsMissingKinds(t *testing.T) {
	table := scope.Table{scope.KindAgent: {"a:b:{tenant}", "a:b:{tenant}", "c:d:*"}}
	w := scope.Workload{Kind: scope.KindAgent, Tenant: tenantX, Agent: agentA, ID: agentID(tenantX, agentA)}
	got, err := table.For(w)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"a:b:" + tenantX, "c:d:*"}, scope.Strings(got)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	none, err := table.For(scope.Workload{Kind: scope.KindKernel, Node: "n"})
	if err != nil || len(none) != 0 {
		t.Errorf("For(kernel) = %v, %v; want nothing", none, err)
	}
	// A workload without a tenant (not made by ParseWorkload) cannot fill a template.
	if _, err := table.For(scope.Workload{Kind: scope.KindAgent}); err == nil {
		t.Error("For a tenant-less agent succeeded")
	}
}

func TestWorkloadPrincipal(t *testing.T) {
	w, err := scope.ParseWorkload(agentID(tenantX, agentA), td)
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Date(2030, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600))
	got := w.Principal([]scope.Scope{scope.MustParse("registry:read:" + tenantX)}, "svid:abc", exp)
	want := principal.Principal{Subject: agentA, Tenant: tenantX, Scopes: []string{"registry:read:" + tenantX}, TokenID: "svid:abc", ExpiresAt: exp.UTC()}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	k, err := scope.ParseWorkload(spiffeid.RequireFromSegments(td, "kernel", "n1"), td)
	if err != nil {
		t.Fatal(err)
	}
	if p := k.Principal(nil, "", exp); p.Subject != "spiffe://nops.test/kernel/n1" || p.Tenant != "" || len(p.Roles) != 0 {
		t.Errorf("kernel principal = %+v", p)
	}
	if slices.Contains(got.Roles, "SUPER_ADMIN") {
		t.Error("a workload principal carries a role")
	}
}
