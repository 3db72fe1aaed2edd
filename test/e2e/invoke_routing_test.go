package e2e

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

// Routing tables split traffic by static weight: with the static balancer (no health score in
// the way) a 1:3 route gives 25 % / 75 % of 800 calls within ±6 points (about four standard
// deviations), and a target drained to weight 0 gets nothing.
func TestInvokeRoutingHonoursWeights(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(c *config.Config) { c.Invoke.Balancing = "static" })
	k, admin := f.k, f.keys["ADMIN"]
	light := newFleetAgent(t, k, admin, "light", "split.op")
	heavy := newFleetAgent(t, k, admin, "heavy", "split.op")
	drained := newFleetAgent(t, k, admin, "drained", "split.op")
	// The route exists before the first call of the capability, so no cached "no route" can
	// stand in for it.
	putRoute(t, k, admin, "split.op", map[string]any{"targets": []any{
		target(light.id, 1, 0), target(heavy.id, 3, 0), target(drained.id, 0, 0),
	}})

	cl := newInvokeClient(t, k, admin)
	const n = 800
	rs := runCalls(n, 8, func(int) invokeResult { return cl.call("split.op") })
	for _, r := range rs {
		if r.status != http.StatusOK {
			t.Fatalf("a call failed: %v", r)
		}
	}
	by := countByAgent(rs)
	lightPct, heavyPct := 100*float64(by[light.id])/n, 100*float64(by[heavy.id])/n
	t.Logf("shares of %d calls: light (weight 1) %.1f %%, heavy (weight 3) %.1f %%, drained (weight 0) %d calls", n, lightPct, heavyPct, by[drained.id])
	if math.Abs(lightPct-25) > 6 || math.Abs(heavyPct-75) > 6 {
		t.Errorf("shares %.1f %% / %.1f %%, want 25 / 75 ± 6 points", lightPct, heavyPct)
	}
	if drained.hits.Load() != 0 || by[drained.id] != 0 {
		t.Errorf("the drained target received %d calls", drained.hits.Load())
	}
	// The agents' own counts agree with the kernel's Nops-Agent-Id: no call was answered by one
	// agent and counted for another, and none was sent twice.
	if light.hits.Load() != int64(by[light.id]) || heavy.hits.Load() != int64(by[heavy.id]) {
		t.Errorf("agents counted %d / %d calls, answers name %d / %d", light.hits.Load(), heavy.hits.Load(), by[light.id], by[heavy.id])
	}
}

// A zombie (no heartbeat for longer than registry.zombie_after) and an ejected agent (too many
// consecutive failures) receive no calls at all, counted at the agents themselves.
func TestInvokeSkipsZombieAndEjectedAgents(t *testing.T) {
	t.Parallel()
	t.Run("zombie", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, func(c *config.Config) {
			c.Registry.StaleAfter = config.Duration(time.Second)
			c.Registry.ZombieAfter = config.Duration(2 * time.Second)
			c.Registry.SweepInterval = config.Duration(100 * time.Millisecond)
			c.Invoke.CandidatesTTL = config.Duration(10 * time.Millisecond)
			c.Invoke.Balancing = "static" // a 50/50 split, so "nothing" cannot be luck
		})
		k, admin := f.k, f.keys["ADMIN"]
		live := newFleetAgent(t, k, admin, "live", "zombie.op")
		lapsing := newFleetAgent(t, k, admin, "lapsing", "zombie.op")
		heartbeatEvery(t, k, f.keys["OPERATOR"], live.id, 200*time.Millisecond)
		cl := newInvokeClient(t, k, admin)

		// Both serve while both are fresh: what follows is the zombie rule, not a bias.
		warm := runCalls(20, 1, func(int) invokeResult { return cl.call("zombie.op") })
		by := countByAgent(warm)
		if by[live.id] == 0 || by[lapsing.id] == 0 || by[live.id]+by[lapsing.id] != 20 {
			t.Fatalf("fresh agents' shares %v, want both", by)
		}

		status := func(id string) string {
			resp, body := k.Do(t, "GET", "/v1/agents/"+id, nil, admin)
			mustStatus(t, resp, body, http.StatusOK)
			return decode[agentDoc](t, body).Status
		}
		took := pollUntil(t, 15*time.Second, "the agent without heartbeats turns zombie", func() bool { return status(lapsing.id) == "zombie" })
		t.Logf("zombie after %s more", took.Round(time.Millisecond))
		if s := status(live.id); s != "healthy" {
			t.Fatalf("the heartbeating agent is %s", s)
		}
		before := lapsing.hits.Load()
		rs := runCalls(40, 4, func(int) invokeResult { return cl.call("zombie.op") })
		for _, r := range rs {
			if r.status != http.StatusOK || r.agent != live.id {
				t.Errorf("call after the zombie age: %v, want 200 from the live agent", r)
			}
		}
		if got := lapsing.hits.Load() - before; got != 0 {
			t.Errorf("the zombie received %d calls", got)
		}
	})

	t.Run("ejected", func(t *testing.T) {
		t.Parallel()
		const ejectAfter = 3
		f := newFixture(t, func(c *config.Config) {
			c.Invoke.Balancing = "static"
			c.Invoke.EjectAfter = ejectAfter
			c.Invoke.EjectFor = config.Duration(time.Minute) // outlasts the test
			c.Invoke.BreakerFailures = 1000                  // the breaker must not hide the ejection
		})
		k, admin := f.k, f.keys["ADMIN"]
		good := newFleetAgent(t, k, admin, "good", "eject.op")
		bad := newFleetAgent(t, k, admin, "bad", "eject.op")
		bad.status.Store(http.StatusInternalServerError)
		bal := k.Invoker().Balancer()
		cl := newInvokeClient(t, k, admin)

		// Sequential calls: the bad agent answers 500 (relayed: the call is not retryable) until
		// its consecutive failures eject it.
		for i := 0; !bal.State(bad.id).Ejected; i++ {
			if i == 200 {
				t.Fatalf("not ejected after 200 calls; state %+v, bad agent hits %d", bal.State(bad.id), bad.hits.Load())
			}
			r := cl.call("eject.op")
			if r.status != http.StatusOK && r.status != http.StatusInternalServerError {
				t.Fatalf("call %d: %v", i, r)
			}
			// The kernel accounts for an attempt after relaying its answer: let it, so that the
			// next call is chosen with this one's outcome known.
			pollUntil(t, 5*time.Second, "the attempt is accounted for", func() bool {
				return bal.State(bad.id).InFlight == 0 && bal.State(good.id).InFlight == 0
			})
		}
		if got := bad.hits.Load(); got != ejectAfter {
			t.Errorf("ejected after %d failures, want invoke.eject_after = %d", got, ejectAfter)
		}
		before := bad.hits.Load()
		rs := runCalls(40, 4, func(int) invokeResult { return cl.call("eject.op") })
		for _, r := range rs {
			if r.status != http.StatusOK || r.agent != good.id {
				t.Errorf("call while the bad agent is ejected: %v, want 200 from the good agent", r)
			}
		}
		st := bal.State(bad.id)
		if !st.Ejected {
			t.Fatalf("the ejection ended during the test: %+v", st)
		}
		if got := bad.hits.Load() - before; got != 0 {
			t.Errorf("the ejected agent received %d calls", got)
		}
	})
}

// heartbeatEvery keeps agentID's heartbeats coming until the test ends.
func heartbeatEvery(t *testing.T, k *kerneltest.Kernel, auth, agentID string, every time.Duration) {
	t.Helper()
	name, value, _ := strings.Cut(auth, ":")
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var errMu sync.Mutex
	var firstErr error
	wg.Go(func() {
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, k.URL+"/v1/agents/"+agentID+"/heartbeat", nil)
			if err == nil {
				req.Header.Set(strings.TrimSpace(name), strings.TrimSpace(value))
				var resp *http.Response
				if resp, err = http.DefaultClient.Do(req); err == nil {
					_ = resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("heartbeat: status %d", resp.StatusCode)
					}
				}
			}
			if err != nil && ctx.Err() == nil {
				errMu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				errMu.Unlock()
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		if firstErr != nil {
			t.Errorf("heartbeat of %s: %v", agentID, firstErr)
		}
	})
}

// Fallback tiers are used only when the primary tier has no available agent: while the primary
// target serves, the priority-1 target gets nothing; drained (weight 0) or dead, the fallback
// answers every call.
func TestInvokeFallsBackOnlyWithoutAPrimary(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	k, admin := f.k, f.keys["ADMIN"]
	primary := newFleetAgent(t, k, admin, "primary", "tier.op")
	fallback := newFleetAgent(t, k, admin, "fallback", "tier.op")
	route := func(primaryWeight int) map[string]any {
		return map[string]any{"targets": []any{target(primary.id, primaryWeight, 0), target(fallback.id, 1, 1)}}
	}
	putRoute(t, k, admin, "tier.op", route(1))
	cl := newInvokeClient(t, k, admin)
	allFrom := func(phase, agentID string, n int, retryable bool) {
		t.Helper()
		rs := runCalls(n, 2, func(i int) invokeResult {
			if retryable {
				return cl.call("tier.op", fmt.Sprintf("Idempotency-Key: tier-%d", i))
			}
			return cl.call("tier.op")
		})
		for _, r := range rs {
			if r.status != http.StatusOK || r.agent != agentID {
				t.Fatalf("%s: %v, want 200 from %s", phase, r, agentID)
			}
		}
	}

	allFrom("primary available", primary.id, 30, false)
	if got := fallback.hits.Load(); got != 0 {
		t.Fatalf("the fallback received %d calls while the primary served", got)
	}

	// The primary tier drained: the route change reaches the invoke path within a second.
	putRoute(t, k, admin, "tier.op", route(0))
	pollUntil(t, 5*time.Second, "a drained primary tier falls back", func() bool {
		return cl.call("tier.op").agent == fallback.id
	})
	before := primary.hits.Load()
	allFrom("primary drained", fallback.id, 20, false)
	if got := primary.hits.Load() - before; got != 0 {
		t.Errorf("the drained primary received %d calls", got)
	}

	// Back: the primary takes over again, the fallback idles.
	putRoute(t, k, admin, "tier.op", route(1))
	pollUntil(t, 5*time.Second, "the primary tier takes over again", func() bool {
		return cl.call("tier.op").agent == primary.id
	})
	before = fallback.hits.Load()
	allFrom("primary restored", primary.id, 20, false)
	if got := fallback.hits.Load() - before; got != 0 {
		t.Errorf("the fallback received %d calls after the primary was restored", got)
	}

	// The primary dies: every (retryable) call is still answered, by the fallback. Without an
	// Idempotency-Key, a call sent on a kept-alive connection the dead agent had closed would
	// rightly fail: the kernel cannot know whether the agent got it.
	primary.kill()
	allFrom("primary dead", fallback.id, 30, true)
	if st := k.Invoker().Balancer().State(primary.id); !st.Ejected {
		t.Logf("the dead primary is not ejected (%+v): its breaker keeps it out", st)
	}
}

// Sticky routing: calls with the same X-Session value go to the same agent, every time; distinct
// values spread over all agents of the route.
func TestInvokeStickyRouting(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	k, admin := f.k, f.keys["ADMIN"]
	var fleet []*fleetAgent
	for i := range 3 {
		fleet = append(fleet, newFleetAgent(t, k, admin, fmt.Sprintf("sticky-%d", i), "sticky.op"))
	}
	putRoute(t, k, admin, "sticky.op", map[string]any{
		"targets":       []any{target(fleet[0].id, 1, 0), target(fleet[1].id, 1, 0), target(fleet[2].id, 1, 0)},
		"sticky_header": "X-Session",
	})
	cl := newInvokeClient(t, k, admin)
	const keys, perKey = 30, 5
	rs := runCalls(keys*perKey, 6, func(i int) invokeResult {
		return cl.call("sticky.op", fmt.Sprintf("X-Session: session-%d", i%keys))
	})
	owner := map[int]string{}
	used := map[string]int{}
	for i, r := range rs {
		if r.status != http.StatusOK {
			t.Fatalf("call %d: %v", i, r)
		}
		key := i % keys
		if o, ok := owner[key]; !ok {
			owner[key] = r.agent
			used[r.agent]++
		} else if o != r.agent {
			t.Errorf("session-%d went to %s and to %s", key, o, r.agent)
		}
	}
	t.Logf("%d sessions over the agents: %v", keys, used)
	// With three equal agents, a given agent owns none of 30 keys with probability (2/3)^30.
	for _, a := range fleet {
		if used[a.id] == 0 {
			t.Errorf("no session went to %s: keys are not spread (%v)", a.name, used)
		}
	}
}

// An ABAC policy denying the invoke action on one capability: 403 problem naming the policy and
// an audit record with it, the agent never contacted; other capabilities are still served.
func TestInvokePolicyDeniesByCapability(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	k, admin := f.k, f.keys["ADMIN"]
	resp, body := k.Do(t, "POST", "/v1/policies", map[string]any{
		"name":       "no-secret-op",
		"effect":     "deny",
		"expression": `action.startsWith("invoke") && capability == "secret.op"`,
		"enabled":    true,
	}, admin)
	mustStatus(t, resp, body, http.StatusCreated)
	policyID := decode[struct {
		ID string `json:"id"`
	}](t, body).ID
	// Until the policy is in force the call finds no agent (404); no agent exists yet, so the
	// polling cannot reach one.
	pollUntil(t, 10*time.Second, "the policy is in force", func() bool {
		resp, _ := k.Do(t, "POST", "/v1/invoke/secret.op", map[string]any{}, admin)
		return resp.StatusCode == http.StatusForbidden
	})
	agent := newFleetAgent(t, k, admin, "keeper", "secret.op", "public.op")

	resp, body = k.Do(t, "POST", "/v1/invoke/secret.op", map[string]any{}, admin)
	wantProblem(t, resp, body, http.StatusForbidden, "forbidden", policyID)
	resp, body = k.Do(t, "POST", "/v1/invoke/public.op", map[string]any{}, admin)
	mustStatus(t, resp, body, http.StatusOK)
	if resp.Header.Get("Nops-Agent-Id") != agent.id {
		t.Errorf("public.op answered by %q, want %s", resp.Header.Get("Nops-Agent-Id"), agent.id)
	}
	if got := agent.capHits("secret.op"); got != 0 {
		t.Errorf("the agent was contacted %d times for the denied capability", got)
	}
	if got := agent.capHits("public.op"); got != 1 {
		t.Errorf("the agent served public.op %d times, want 1", got)
	}
	found := false
	for _, r := range auditRecords(t, k, admin, "action=auth.authorize&decision=deny").Items {
		if strings.Contains(r.Decision.Reason, policyID) && r.Resource == "POST /v1/invoke/secret.op" && !r.Decision.Allowed {
			found = true
		}
	}
	if !found {
		t.Errorf("no auth.authorize denial naming %s on POST /v1/invoke/secret.op in the audit trail", policyID)
	}
}

// A routing table written through one replica governs the calls of another within a second
// (the routing cache's TTL is 0.5 s).
func TestInvokeRouteReachesEveryReplica(t *testing.T) {
	dbURL := services.Postgres(t)
	secrets := t.TempDir()
	shared := func(c *config.Config) {
		c.Database.URL = dbURL
		c.APIKeys.PepperFile, c.Signing.KEKFile = filepath.Join(secrets, "pepper.json"), filepath.Join(secrets, "kek.json")
		c.Egress.AllowLoopback = "true" // the test's agents listen on loopback
	}
	f := newFixture(t, shared)
	b := kerneltest.Start(t, shared)
	admin := f.keys["ADMIN"]
	one := newFleetAgent(t, f.k, admin, "replica-one", "replica.cap")
	two := newFleetAgent(t, f.k, admin, "replica-two", "replica.cap")
	onB := newInvokeClient(t, b, admin)
	// B has read the capability's (absent) table and cached that.
	for i := range 20 {
		if r := onB.call("replica.cap"); r.status != http.StatusOK {
			t.Fatalf("call %d on B before the table: %v", i, r)
		}
	}
	if one.hits.Load() == 0 || two.hits.Load() == 0 {
		t.Fatalf("without a table both agents serve: %d / %d", one.hits.Load(), two.hits.Load())
	}
	putRoute(t, f.k, admin, "replica.cap", map[string]any{"targets": []any{target(one.id, 1, 0), target(two.id, 0, 0)}})
	time.Sleep(time.Second) // the requirement's bound, not a wait for a condition
	before := two.hits.Load()
	for i := range 30 {
		if r := onB.call("replica.cap"); r.status != http.StatusOK || r.agent != one.id {
			t.Fatalf("call %d on B one second after the table changed on A: %v (want agent %s)", i, r, one.id)
		}
	}
	if two.hits.Load() != before {
		t.Errorf("the drained agent got %d calls on B", two.hits.Load()-before)
	}
}
