package routing

import (
	"slices"
	"strings"

	"github.com/nops-kernel/nops/internal/registry"
)

// Weighted is an agent with its static weight within its tier. Weights are relative within one
// tier; the balancer multiplies them by its dynamic scores.
type Weighted struct {
	Agent  registry.Agent
	Weight float64
}

// Resolve groups the routable agents (already filtered by the caller: the route's tenant, the
// capability, no zombie) into priority tiers, best tier first, each agent with its static weight.
//
// Without a route (r nil) every agent is in one tier with weight 1. With one, each agent takes the
// FIRST target it matches, so an agent listed by ID before a version target that also covers it
// follows its own entry (drain one instance: its ID at weight 0, first). An agent whose target has
// weight 0, or that matches no target, receives nothing and is left out. A target's weight is
// split evenly among the agents that took it, so that it is the target's share of its tier
// whatever the number of instances behind it. Empty tiers are left out; agents keep the caller's
// order within a tier. The result is nil when no agent may receive calls.
func Resolve(r *Route, agents []registry.Agent) [][]Weighted {
	if len(agents) == 0 {
		return nil
	}
	if r == nil {
		tier := make([]Weighted, len(agents))
		for i, a := range agents {
			tier[i] = Weighted{Agent: a, Weight: 1}
		}
		return [][]Weighted{tier}
	}
	taken := make([]int, len(agents)) // index of the target each agent took, -1 for none
	count := make([]int, len(r.Targets))
	for i, a := range agents {
		taken[i] = -1
		for j, t := range r.Targets {
			if t.Matches(a) {
				taken[i] = j
				count[j]++
				break
			}
		}
	}
	byPriority := map[int][]Weighted{}
	for i, a := range agents {
		j := taken[i]
		if j < 0 || r.Targets[j].Weight <= 0 {
			continue
		}
		t := r.Targets[j]
		byPriority[t.Priority] = append(byPriority[t.Priority], Weighted{Agent: a, Weight: float64(t.Weight) / float64(count[j])})
	}
	if len(byPriority) == 0 {
		return nil
	}
	priorities := make([]int, 0, len(byPriority))
	for p := range byPriority {
		priorities = append(priorities, p)
	}
	slices.Sort(priorities)
	out := make([][]Weighted, 0, len(priorities))
	for _, p := range priorities {
		out = append(out, byPriority[p])
	}
	return out
}

// Matches reports whether the agent is one t names: by ID, or by version (exactly, or within a
// major / major.minor prefix).
func (t Target) Matches(a registry.Agent) bool {
	if t.AgentID != "" {
		return a.ID == t.AgentID
	}
	return t.Version != "" && versionMatches(t.Version, a.Version)
}

// versionMatches reports whether the canonical agent version v is target: equal to an exact
// version, or within a prefix ("1.2" holds "1.2.0" and "1.2.9-rc.1", not "1.20.0").
func versionMatches(target, v string) bool {
	if isVersionPrefix(target) {
		return strings.HasPrefix(v, target+".")
	}
	return v == target
}
