package routing_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/registry"
	"github.com/nops-kernel/nops/internal/routing"
)

// ag is an agent with an ID (by its last character) and a version.
func ag(id, version string) registry.Agent {
	return registry.Agent{ID: id, TenantID: tenantA, Version: version}
}

// tiers renders Resolve's result as agent IDs with weights, best tier first.
type entry struct {
	ID     string
	Weight float64
}

func render(ts [][]routing.Weighted) [][]entry {
	var out [][]entry
	for _, tier := range ts {
		var es []entry
		for _, w := range tier {
			es = append(es, entry{w.Agent.ID, w.Weight})
		}
		out = append(out, es)
	}
	return out
}

func TestResolve(t *testing.T) {
	a1, a2, a3 := ag(agent1, "1.2.3"), ag(agent2, "1.3.0"), ag(agent3, "2.0.0-rc.1")
	all := []registry.Agent{a1, a2, a3}
	tests := []struct {
		name   string
		route  *routing.Route
		agents []registry.Agent
		want   [][]entry
	}{
		{"no route: one tier, weight 1 each", nil, all, [][]entry{{{agent1, 1}, {agent2, 1}, {agent3, 1}}}},
		{"no route, no agents", nil, nil, nil},
		{"no agents", &routing.Route{Targets: []routing.Target{{Version: "1", Weight: 1}}}, nil, nil},
		{"by agent id", &routing.Route{Targets: []routing.Target{{AgentID: agent2, Weight: 5}}}, all, [][]entry{{{agent2, 5}}}},
		{"major prefix", &routing.Route{Targets: []routing.Target{{Version: "1", Weight: 10}}}, all,
			// The target's weight is split among the agents that took it.
			[][]entry{{{agent1, 5}, {agent2, 5}}}},
		{"minor prefix", &routing.Route{Targets: []routing.Target{{Version: "1.3", Weight: 10}}}, all, [][]entry{{{agent2, 10}}}},
		{"prefix stops at a dot boundary", &routing.Route{Targets: []routing.Target{{Version: "1.2", Weight: 1}}},
			[]registry.Agent{ag(agent1, "1.20.0"), ag(agent2, "1.2.9"), ag(agent3, "11.2.0")}, [][]entry{{{agent2, 1}}}},
		{"prefix holds pre-releases", &routing.Route{Targets: []routing.Target{{Version: "2", Weight: 1}}}, all, [][]entry{{{agent3, 1}}}},
		{"exact version", &routing.Route{Targets: []routing.Target{{Version: "1.2.3", Weight: 1}}},
			[]registry.Agent{a1, ag(agent2, "1.2.3-rc.1"), ag(agent3, "1.2.30")}, [][]entry{{{agent1, 1}}}},
		{"exact pre-release is not a prefix", &routing.Route{Targets: []routing.Target{{Version: "1.2.3-rc.1", Weight: 1}}},
			[]registry.Agent{ag(agent1, "1.2.3-rc.1"), ag(agent2, "1.2.3-rc.1.5")}, [][]entry{{{agent1, 1}}}},
		{"canary: shares per version whatever the instances", &routing.Route{Targets: []routing.Target{{Version: "1.2", Weight: 90}, {Version: "1.3", Weight: 10}}},
			[]registry.Agent{a1, ag("agt_x", "1.2.4"), ag("agt_y", "1.2.5"), a2}, [][]entry{{{agent1, 30}, {"agt_x", 30}, {"agt_y", 30}, {agent2, 10}}}},
		{"tiers in priority order, empty ones left out", &routing.Route{Targets: []routing.Target{
			{AgentID: agent3, Weight: 1, Priority: 7}, {Version: "1.3", Weight: 2, Priority: 2}, {Version: "1.2", Weight: 3, Priority: 0}, {Version: "9", Weight: 1, Priority: 1}}}, all,
			[][]entry{{{agent1, 3}}, {{agent2, 2}}, {{agent3, 1}}}},
		{"first matching target wins", &routing.Route{Targets: []routing.Target{{AgentID: agent1, Weight: 7, Priority: 1}, {Version: "1", Weight: 4}}}, all,
			[][]entry{{{agent2, 4}}, {{agent1, 7}}}},
		{"drained target: its agents get nothing, even if a later target covers them", &routing.Route{Targets: []routing.Target{{AgentID: agent1, Weight: 0}, {Version: "1", Weight: 4}}}, all,
			[][]entry{{{agent2, 4}}}},
		{"drained tier is left out", &routing.Route{Targets: []routing.Target{{Version: "1", Weight: 0}, {Version: "2", Weight: 1, Priority: 1}}}, all,
			[][]entry{{{agent3, 1}}}},
		{"everything drained", &routing.Route{Targets: []routing.Target{{Version: "1", Weight: 0}, {Version: "2", Weight: 0}}}, all, nil},
		{"agents matching no target get nothing", &routing.Route{Targets: []routing.Target{{Version: "3", Weight: 1}}}, all, nil},
		{"caller's order within a tier", &routing.Route{Targets: []routing.Target{{Version: "1", Weight: 2}}}, []registry.Agent{a2, a1},
			[][]entry{{{agent2, 1}, {agent1, 1}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := render(routing.Resolve(tt.route, tt.agents))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Fatalf("Resolve (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTargetMatches(t *testing.T) {
	a := ag(agent1, "1.2.3")
	for _, tt := range []struct {
		t    routing.Target
		want bool
	}{
		{routing.Target{AgentID: agent1}, true},
		{routing.Target{AgentID: agent2}, false},
		{routing.Target{Version: "1"}, true},
		{routing.Target{Version: "1.2"}, true},
		{routing.Target{Version: "1.2.3"}, true},
		{routing.Target{Version: "1.2.4"}, false},
		{routing.Target{Version: "12"}, false},
		{routing.Target{}, false},
	} {
		if got := tt.t.Matches(a); got != tt.want {
			t.Errorf("%+v.Matches(1.2.3) = %v, want %v", tt.t, got, tt.want)
		}
	}
}
