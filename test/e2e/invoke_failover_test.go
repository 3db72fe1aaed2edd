package e2e

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/events"
	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
)

// Failover tests measure time under load, so they do not run in parallel with other tests.

const (
	failoverClients  = 20
	failoverDeadline = 3 * time.Second // Nops-Timeout-Ms of every call
	// deadlineSlack is what a call may take beyond its deadline: the answer's way back through
	// a loaded kernel on a shared 2-CPU machine with the race detector on.
	deadlineSlack = time.Second
)

// failoverRun is what one failover load measured.
type failoverRun struct {
	results  []invokeResult
	killedAt time.Time
	ejected  time.Time // when the balancer was first seen ejecting the dead agent; zero: never
	// switched bounds the switch-over from above: the end of the first /metrics sample, taken
	// during the load, that already showed the final count of attempts sent to the dead agent.
	// The kernel sent it nothing after that sample was taken.
	switched    time.Time
	endedAt     time.Time
	sentAtKill  float64
	sentTotal   float64
	cutInFlight int64
	samples     int
	maxScrape   time.Duration
}

// runFailover starts three agents (2–5 ms service time) and 20 clients calling failover.op
// without pause, kills one agent while it serves a call after 1.5 s, and stops the load 2.5 s
// later.
func runFailover(t *testing.T, idempotent bool) failoverRun {
	t.Helper()
	f := newFixture(t)
	k, admin := f.k, f.keys["ADMIN"]
	var fleet []*fleetAgent
	for i := range 3 {
		a := newFleetAgent(t, k, admin, fmt.Sprintf("fo-%d", i), "failover.op")
		a.setDelay(2*time.Millisecond, 5*time.Millisecond)
		fleet = append(fleet, a)
	}
	dead := fleet[0]
	cl := newInvokeClient(t, k, admin)
	for _, r := range runCalls(30, 3, func(int) invokeResult { return cl.call("failover.op") }) {
		if r.status != http.StatusOK {
			t.Fatalf("warm-up call: %v", r)
		}
	}
	attempts := func() float64 {
		v, err := cl.metric("nops_invoke_attempts_total", `agent="`+dead.id+`"`)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}

	stop := make(chan struct{})
	var stopOnce sync.Once
	stopLoad := func() { stopOnce.Do(func() { close(stop) }) }
	defer stopLoad()
	var run failoverRun
	loadDone := make(chan []invokeResult, 1)
	go func() {
		loadDone <- runLoadFor(stop, failoverClients, func(w, seq int) invokeResult {
			h := []string{fmt.Sprintf("Nops-Timeout-Ms: %d", failoverDeadline.Milliseconds())}
			if idempotent {
				h = append(h, fmt.Sprintf("Idempotency-Key: fo-%d-%d", w, seq))
			}
			return cl.call("failover.op", h...)
		})
	}()

	<-time.After(1500 * time.Millisecond) // the load runs; nothing to wait for
	if dead.hits.Load() < 20 {
		t.Fatalf("the agent to kill served only %d calls before the kill", dead.hits.Load())
	}
	run.sentAtKill = attempts()
	bal := k.Invoker().Balancer()
	ejected := make(chan time.Time, 1)
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		for {
			if bal.State(dead.id).Ejected {
				ejected <- time.Now()
				return
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	dead.killWhileServing(t)
	run.killedAt = dead.killedAt

	// Sample the attempts sent to the dead agent while the load goes on.
	type sample struct {
		end time.Time
		v   float64
	}
	var samples []sample
	for end := run.killedAt.Add(2500 * time.Millisecond); time.Now().Before(end); {
		start := time.Now()
		v := attempts()
		samples = append(samples, sample{time.Now(), v})
		run.maxScrape = max(run.maxScrape, time.Since(start))
		<-time.After(20 * time.Millisecond)
	}
	stopLoad()
	run.endedAt = time.Now()
	run.results = <-loadDone
	<-watchDone
	select {
	case run.ejected = <-ejected:
	default:
	}
	run.sentTotal = attempts()
	run.cutInFlight = dead.cut.Load()
	run.samples = len(samples)
	i := len(samples) - 1
	for i > 0 && samples[i-1].v == run.sentTotal {
		i--
	}
	if i >= 0 && samples[i].v == run.sentTotal {
		run.switched = samples[i].end
	} else {
		run.switched = run.endedAt // still sending when the load ended
	}
	return run
}

// Kill one of three agents under constant load with retryable (Idempotency-Key) calls: no call
// is lost, none outlives its deadline, and the kernel stops sending to the dead agent within
// 3 s (the goal is 0.5 s).
func TestInvokeFailoverLosesNothing(t *testing.T) {
	run := runFailover(t, true)
	lost, late := 0, 0
	for _, r := range run.results {
		if r.status != http.StatusOK {
			lost++
			if lost <= 5 {
				t.Errorf("lost call (started %s after the kill): %v", r.start.Sub(run.killedAt).Round(time.Millisecond), r)
			}
		}
		if r.dur > failoverDeadline+deadlineSlack {
			late++
		}
	}
	by := countByAgent(run.results)
	afterKill := 0
	for _, r := range run.results {
		if r.start.After(run.killedAt) {
			afterKill++
		}
	}
	t.Logf("%d calls (%d begun after the kill), %d lost, %d past the deadline; p50 %s p99 %s max %s; answered by %v",
		len(run.results), afterKill, lost, late, percentile(run.results, 50), percentile(run.results, 99), percentile(run.results, 100), by)
	if late > 0 {
		t.Errorf("%d calls took longer than their %s deadline + %s", late, failoverDeadline, deadlineSlack)
	}
	if run.cutInFlight == 0 {
		t.Errorf("no request was in flight at the dead agent when it died: the test did not exercise in-flight failover")
	}
	checkSwitchOver(t, run)
}

// checkSwitchOver asserts that the kernel stopped sending to the dead agent within 3 s of the
// kill and sent it nothing for the rest of the load.
func checkSwitchOver(t *testing.T, run failoverRun) {
	t.Helper()
	if run.ejected.IsZero() {
		t.Logf("switch-over: the dead agent was not ejected (its circuit breaker stopped the calls)")
	} else {
		t.Logf("switch-over: ejected %s after the kill", run.ejected.Sub(run.killedAt).Round(time.Millisecond))
	}
	switchOver := run.switched.Sub(run.killedAt)
	quiet := run.endedAt.Sub(run.switched)
	t.Logf("switch-over: %.0f attempts sent to the dead agent after the kill (%d cut in flight), none after %s (upper bound: %d /metrics samples, the slowest %s); nothing sent for the last %s of the load",
		run.sentTotal-run.sentAtKill, run.cutInFlight, switchOver.Round(time.Millisecond), run.samples, run.maxScrape.Round(time.Millisecond), quiet.Round(time.Millisecond))
	if switchOver >= 3*time.Second {
		t.Errorf("switch-over %s, want < 3 s", switchOver)
	}
	if quiet < time.Second {
		t.Errorf("the kernel kept sending to the dead agent until %s before the end of the load", quiet)
	}
}

// The same kill with calls that are not retryable: a call in flight at the dead agent may fail,
// but with a definite 502/504 problem before its deadline; calls begun after the switch-over
// never go to the dead agent, so they all succeed.
func TestInvokeFailoverWithoutRetriesFailsDefinitely(t *testing.T) {
	run := runFailover(t, false)
	failed := 0
	for _, r := range run.results {
		switch {
		case r.status == http.StatusOK:
		case (r.status == http.StatusBadGateway && r.problem == "bad_gateway") || (r.status == http.StatusGatewayTimeout && r.problem == "gateway_timeout"):
			failed++
			if r.start.After(run.switched) {
				t.Errorf("a call begun %s after the switch-over failed: %v", r.start.Sub(run.switched).Round(time.Millisecond), r)
			}
		default:
			t.Errorf("not a definite answer: %v", r)
		}
		if r.dur > failoverDeadline+deadlineSlack {
			t.Errorf("a call outlived its deadline: %v", r)
		}
	}
	t.Logf("%d calls, %d failed definitely; p99 %s max %s", len(run.results), failed, percentile(run.results, 99), percentile(run.results, 100))
	checkSwitchOver(t, run)
}

// Retry storm: every agent answers 503 to retryable calls. The retry budget keeps the attempts
// the agents see within calls × (1 + retry_budget) + floor × window, far below calls ×
// max_attempts, and every call still gets a definite answer. Breakers and ejection are set out of
// reach so that the budget alone is what limits the retries.
func TestInvokeRetryStormStaysWithinBudget(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(c *config.Config) {
		c.Invoke.BreakerFailures = 1000
		c.Invoke.EjectAfter = 1000
	})
	k, admin := f.k, f.keys["ADMIN"]
	var fleet []*fleetAgent
	for i := range 3 {
		a := newFleetAgent(t, k, admin, fmt.Sprintf("storm-%d", i), "storm.op")
		a.status.Store(http.StatusServiceUnavailable)
		fleet = append(fleet, a)
	}
	cl := newInvokeClient(t, k, admin)
	const calls = 300
	start := time.Now()
	rs := runCalls(calls, 10, func(i int) invokeResult {
		return cl.call("storm.op", fmt.Sprintf("Idempotency-Key: storm-%d", i), "Nops-Timeout-Ms: 5000")
	})
	elapsed := time.Since(start)
	for _, r := range rs {
		definite := r.status == http.StatusServiceUnavailable || (r.status == http.StatusBadGateway && r.problem == "bad_gateway")
		if !definite || r.dur > 5*time.Second+deadlineSlack {
			t.Errorf("not a definite answer in time: %v", r)
		}
	}
	var total int64
	for _, a := range fleet {
		total += a.hits.Load()
	}
	in := k.Config.Invoke
	// The budget's window is 10 s; a run longer than that earns the floor again.
	bound := float64(calls)*(1+in.RetryBudget) + in.RetryBudgetFloor*(10+elapsed.Seconds()) + 5
	exhausted := metricValue(t, k, "nops_invoke_retry_budget_exhausted_total")
	t.Logf("%d calls in %s: %d attempts at the agents (bound %.0f, without a budget up to %d); retries refused by the budget: %.0f",
		calls, elapsed.Round(time.Millisecond), total, bound, calls*in.MaxAttempts, exhausted)
	if float64(total) > bound {
		t.Errorf("%d attempts, more than the retry budget allows (%.0f)", total, bound)
	}
	if total >= int64(calls*in.MaxAttempts) {
		t.Errorf("%d attempts: every call was retried to max_attempts", total)
	}
	if total <= calls {
		t.Errorf("%d attempts for %d calls: retryable calls were not retried at all", total, calls)
	}
}

// A straggler: one of three agents stalls for 10 s on every call. Hedging (a route with
// hedge.delay_ms 50, retryable) keeps the p99 of all calls far below the stall; without hedging,
// a call that lands on the stalled agent ends with a 504 problem at its 1 s deadline, not a hang.
func TestInvokeStragglerIsHedgedOrTimesOut(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	k, admin := f.k, f.keys["ADMIN"]
	var fleet []*fleetAgent
	for i := range 3 {
		a := newFleetAgent(t, k, admin, fmt.Sprintf("strag-%d", i), "slow.hedged", "slow.plain", "slow.pinned")
		a.setDelay(2*time.Millisecond, 5*time.Millisecond)
		fleet = append(fleet, a)
	}
	staller := fleet[0]
	staller.stall.Store(int64(10 * time.Second))
	all := []any{target(fleet[0].id, 1, 0), target(fleet[1].id, 1, 0), target(fleet[2].id, 1, 0)}
	putRoute(t, k, admin, "slow.hedged", map[string]any{
		"targets": all, "retryable": true, "hedge": map[string]any{"delay_ms": 50, "max_extra": 1},
	})
	putRoute(t, k, admin, "slow.plain", map[string]any{"targets": all})
	putRoute(t, k, admin, "slow.pinned", map[string]any{"targets": []any{target(staller.id, 1, 0)}})
	cl := newInvokeClient(t, k, admin)

	t.Run("hedged", func(t *testing.T) {
		// The 5 s deadline only bounds the test's time if hedging does not work.
		rs := runCalls(200, 10, func(int) invokeResult { return cl.call("slow.hedged", "Nops-Timeout-Ms: 5000") })
		for _, r := range rs {
			if r.status != http.StatusOK {
				t.Errorf("hedged call failed: %v", r)
			}
		}
		p99 := percentile(rs, 99)
		t.Logf("200 hedged calls: p50 %s p95 %s p99 %s max %s; the straggler received %d of them; answered by %v; hedges and retries refused by the retry budget: %.0f",
			percentile(rs, 50), percentile(rs, 95), p99, percentile(rs, 100), staller.capHits("slow.hedged"), countByAgent(rs),
			metricValue(t, k, "nops_invoke_retry_budget_exhausted_total", `capability="slow.hedged"`))
		if p99 >= 2*time.Second {
			t.Errorf("p99 %s with hedging, want < 2 s", p99)
		}
	})

	t.Run("deadline", func(t *testing.T) {
		const deadline = time.Second
		check := func(r invokeResult) {
			t.Helper()
			if r.dur > deadline+deadlineSlack {
				t.Errorf("a call outlived its %s deadline: %v", deadline, r)
			}
		}
		// Every call of slow.pinned lands on the straggler: each ends with a 504 problem at its
		// deadline. Four calls stay below the breaker and ejection thresholds (5), which would
		// turn the later ones into a quick 503.
		for _, r := range runCalls(4, 4, func(int) invokeResult { return cl.call("slow.pinned", "Nops-Timeout-Ms: 1000") }) {
			if r.status != http.StatusGatewayTimeout || r.problem != "gateway_timeout" {
				t.Errorf("call to the straggler: %v, want a 504 gateway_timeout problem", r)
			}
			if r.dur < deadline-50*time.Millisecond {
				t.Errorf("a call to the straggler ended before its deadline: %v", r)
			}
			check(r)
		}
		// Spread over the three agents, calls either succeed quickly or time out at the deadline.
		rs := runCalls(30, 10, func(int) invokeResult { return cl.call("slow.plain", "Nops-Timeout-Ms: 1000") })
		timeouts := 0
		for _, r := range rs {
			switch {
			case r.status == http.StatusOK && r.agent != staller.id:
			case r.status == http.StatusGatewayTimeout && r.problem == "gateway_timeout":
				timeouts++
			default:
				t.Errorf("call: %v, want 200 from a fast agent or a 504 problem", r)
			}
			check(r)
		}
		t.Logf("slow.plain: %d of 30 calls timed out; p50 %s max %s", timeouts, percentile(rs, 50), percentile(rs, 100))
	})
}

// A circuit breaker end to end: three failures open it (calls are refused without reaching the
// agent), after breaker_delay it lets a probe through; a failed probe opens it again, successful
// ones close it and the agent serves again.
func TestInvokeBreakerHalfOpenProbes(t *testing.T) {
	t.Parallel()
	const delay = 500 * time.Millisecond
	f := newFixture(t, func(c *config.Config) {
		c.Invoke.BreakerFailures = 3
		c.Invoke.BreakerDelay = config.Duration(delay)
		c.Invoke.EjectAfter = 1000 // ejection must not hide the breaker
	})
	k, admin := f.k, f.keys["ADMIN"]
	agent := newFleetAgent(t, k, admin, "flaky", "breaker.op")
	agent.status.Store(http.StatusInternalServerError)
	cl := newInvokeClient(t, k, admin)
	refused := func(r invokeResult) bool {
		return r.status == http.StatusServiceUnavailable && r.problem == "unavailable"
	}
	// openBreaker fails three calls (the 500s are relayed) and checks that the next call is
	// refused without reaching the agent. It returns when the breaker opened.
	openBreaker := func() time.Time {
		t.Helper()
		for i := range 3 {
			if r := cl.call("breaker.op"); r.status != http.StatusInternalServerError {
				t.Fatalf("failing call %d: %v", i, r)
			}
		}
		opened := time.Now()
		hits := agent.hits.Load()
		r := cl.call("breaker.op")
		// Only meaningful while the breaker is surely still open; a machine that paused longer
		// than the delay would have let a probe through, rightly.
		if time.Since(opened) < delay*4/5 {
			if !refused(r) || agent.hits.Load() != hits {
				t.Fatalf("call after 3 failures: %v, agent hits %d → %d; want a 503 problem without contacting the agent", r, hits, agent.hits.Load())
			}
		} else {
			t.Logf("slow machine: the open-breaker check was skipped (%s)", time.Since(opened))
		}
		return opened
	}

	opened := openBreaker()
	// Still failing: the first probe after the delay reaches the agent, fails, and the breaker
	// opens again at once.
	hits := agent.hits.Load()
	pollUntil(t, 10*time.Second, "a probe reaches the agent", func() bool {
		r := cl.call("breaker.op")
		if agent.hits.Load() == hits && !refused(r) {
			t.Fatalf("a call that did not reach the agent: %v", r)
		}
		return agent.hits.Load() > hits
	})
	if since := time.Since(opened); since < delay-20*time.Millisecond {
		t.Errorf("a probe went through %s after the breaker opened, before breaker_delay %s", since, delay)
	}
	if got := agent.hits.Load() - hits; got != 1 {
		t.Errorf("%d probes went through, want 1", got)
	}
	reopened := time.Now()
	hits = agent.hits.Load()
	if r := cl.call("breaker.op"); time.Since(reopened) < delay*4/5 && (!refused(r) || agent.hits.Load() != hits) {
		t.Errorf("call after a failed probe: %v; want a 503 problem without contacting the agent", r)
	}

	// The agent recovers: a probe succeeds, then the breaker closes and every call is served.
	agent.status.Store(http.StatusOK)
	pollUntil(t, 10*time.Second, "a probe succeeds", func() bool {
		r := cl.call("breaker.op")
		if r.status != http.StatusOK && !refused(r) {
			t.Fatalf("call while recovering: %v", r)
		}
		return r.status == http.StatusOK
	})
	for i := range 10 {
		if r := cl.call("breaker.op"); r.status != http.StatusOK {
			t.Fatalf("call %d after the recovery: %v", i, r)
		}
	}
	for _, to := range []string{"open", "half_open", "closed"} {
		if v := metricValue(t, k, "nops_invoke_breaker_transitions_total", `agent="`+agent.id+`"`, `to="`+to+`"`); v < 1 {
			t.Errorf("no breaker transition to %s in the metrics", to)
		}
	}
	if v := metricValue(t, k, "nops_invoke_breaker_state", `agent="`+agent.id+`"`); v != 0 {
		t.Errorf("breaker state gauge %v after the recovery, want 0 (closed)", v)
	}
	// Every change is also an event on the bus (written in batches: poll for the last ones).
	want := []string{"closed>open", "open>half_open", "half_open>open", "half_open>closed"}
	seen := map[string]bool{}
	kerneltest.WaitFor(t, 10*time.Second, "the breaker events on the bus", func() bool {
		for _, e := range streamEvents(t, k) {
			if e.Type != events.TypeAgentBreakerChanged {
				continue
			}
			p, err := e.Payload()
			if err != nil {
				t.Fatal(err)
			}
			if b := p.(events.AgentBreakerChanged); b.AgentID == agent.id {
				seen[b.From+">"+b.To] = true
			}
		}
		for _, change := range want {
			if !seen[change] {
				return false
			}
		}
		return true
	})
}
