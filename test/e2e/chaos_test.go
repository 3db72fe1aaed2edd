package e2e

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/kernel"
	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

// TestChaosAgentAndBusFaults drives the chaos toggles of a running kernel: agent errors at 100 %
// fail invocations as a transport failure without reaching the agent, bus errors at 100 % keep
// events in the outbox, and clearing the rules brings both back.
func TestChaosAgentAndBusFaults(t *testing.T) {
	f := newFixture(t, func(c *config.Config) { c.Chaos.Enabled = true })
	k, admin := f.k, f.keys["ADMIN"]
	agent := newFleetAgent(t, k, admin, "chaos-agent", "chaos.op")
	setRules := func(rules ...map[string]any) {
		t.Helper()
		if rules == nil {
			rules = []map[string]any{}
		}
		resp, body := k.Do(t, "PUT", "/v1/admin/chaos", map[string]any{"rules": rules}, f.admin)
		mustStatus(t, resp, body, http.StatusOK)
	}
	invoke := func() (*http.Response, []byte) {
		return k.Do(t, "POST", "/v1/invoke/chaos.op", map[string]any{"n": 1}, admin)
	}
	resp, body := invoke()
	mustStatus(t, resp, body, http.StatusOK)
	before := agent.hits.Load()

	// A tenant's ADMIN cannot set faults.
	resp, body = k.Do(t, "PUT", "/v1/admin/chaos", map[string]any{"rules": []any{}}, admin)
	mustStatus(t, resp, body, http.StatusForbidden)

	setRules(map[string]any{"target": "agent", "error_percent": 100})
	resp, body = invoke()
	if resp.StatusCode != http.StatusBadGateway && resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("invocation with agent faults: %d %s, want the transport-failure answer (502/503)", resp.StatusCode, body)
	}
	if got := agent.hits.Load(); got != before {
		t.Fatalf("the agent was reached %d times under 100 %% agent faults", got-before)
	}
	setRules()
	resp, body = invoke()
	mustStatus(t, resp, body, http.StatusOK)

	// Bus faults: publishes fail, events wait in the outbox; cleared, the outbox drains.
	st, err := kernel.OpenStore(context.Background(), k.Config, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	kerneltest.WaitFor(t, 30*time.Second, "the outbox drains before the bus faults", func() bool {
		b, err := st.OutboxBacklog(context.Background())
		return err == nil && b.Pending == 0
	})
	setRules(map[string]any{"target": "bus", "error_percent": 100})
	resp, body = k.Do(t, "POST", "/v1/agents", agentSpec("chaos-bus"), admin)
	mustStatus(t, resp, body, http.StatusCreated)
	// The relay publishes within its poll interval; the event must still be waiting after a
	// few of them (it cannot leave the outbox while every publish fails).
	time.Sleep(3 * k.Config.Outbox.PollInterval.D())
	b, err := st.OutboxBacklog(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if b.Pending == 0 {
		t.Fatal("no event waits in the outbox under 100 % bus faults")
	}
	setRules()
	kerneltest.WaitFor(t, 30*time.Second, "the outbox drains once the bus faults are cleared", func() bool {
		b, err := st.OutboxBacklog(context.Background())
		return err == nil && b.Pending == 0
	})

	resp, body = k.Do(t, "GET", "/v1/admin/chaos", nil, f.admin)
	mustStatus(t, resp, body, http.StatusOK)
	if got := decode[struct {
		Enabled bool  `json:"enabled"`
		Rules   []any `json:"rules"`
	}](t, body); !got.Enabled || len(got.Rules) != 0 {
		t.Fatalf("chaos at the end %s", body)
	}
}

// Off by default: the configuration gates the toggles.
func TestChaosDisabledByDefault(t *testing.T) {
	f := newFixture(t)
	resp, body := f.k.Do(t, "PUT", "/v1/admin/chaos", map[string]any{"rules": []any{map[string]any{"target": "agent", "error_percent": 100}}}, f.admin)
	mustStatus(t, resp, body, http.StatusConflict)
}

// TestChaosDatabaseAndRedisFaults: database faults fail audited changes before their
// transaction begins — a clear 5xx, nothing half written, reads still served — and Redis faults
// make the shared rate limiter fall back to local limits (counted) without failing requests.
// Cleared, both work again.
func TestChaosDatabaseAndRedisFaults(t *testing.T) {
	url, ns := services.RedisNamespace(t)
	f := newFixture(t, func(c *config.Config) {
		c.Chaos.Enabled = true
		c.Redis.URL, c.Bus.Namespace = url, ns
		c.Limits.PerTenant = "100000/m" // counted in Redis while it answers
	})
	k, admin := f.k, f.keys["ADMIN"]
	setRules := func(rules ...map[string]any) {
		t.Helper()
		if rules == nil {
			rules = []map[string]any{}
		}
		resp, body := k.Do(t, "PUT", "/v1/admin/chaos", map[string]any{"rules": rules}, f.admin)
		mustStatus(t, resp, body, http.StatusOK)
	}
	agents := func() int {
		resp, body := k.Do(t, "GET", "/v1/agents", nil, admin)
		mustStatus(t, resp, body, http.StatusOK)
		return len(decode[struct {
			Items []agentDoc `json:"items"`
		}](t, body).Items)
	}

	// Database: every audited change fails before its transaction; reads are served.
	setRules(map[string]any{"target": "database", "error_percent": 100})
	resp, body := k.Do(t, "POST", "/v1/agents", agentSpec("chaos-db"), admin)
	if resp.StatusCode < 500 {
		t.Fatalf("registration under 100 %% database faults: %d %s, want a 5xx", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/problem+json") || strings.Contains(string(body), "goroutine") {
		t.Fatalf("the failure is not a problem document: %s %s", ct, body)
	}
	if n := agents(); n != 0 {
		t.Fatalf("%d agents after a failed registration, want 0", n)
	}
	recs := auditRecords(t, k, f.admin, "tenant="+f.tenant+"&action=agent.register")
	if len(recs.Items) != 0 {
		t.Fatalf("audit records of a registration that failed: %+v", recs.Items)
	}
	setRules()
	resp, body = k.Do(t, "POST", "/v1/agents", agentSpec("chaos-db"), admin)
	mustStatus(t, resp, body, http.StatusCreated)

	// Redis: the shared limiter cannot count; requests keep being served on local limits, and
	// the fallback is counted.
	degradedBefore := metricValue(t, k, "nops_ratelimit_degraded_total")
	setRules(map[string]any{"target": "redis", "error_percent": 100})
	for range 5 {
		resp, body := k.Do(t, "GET", "/v1/agents", nil, admin)
		mustStatus(t, resp, body, http.StatusOK)
	}
	if got := metricValue(t, k, "nops_ratelimit_degraded_total"); got <= degradedBefore {
		t.Fatalf("nops_ratelimit_degraded_total %v → %v under Redis faults: the fallback is not counted", degradedBefore, got)
	}
	// The limiter stops asking Redis for a while after a failure, so few faults are drawn.
	if v := metricValue(t, k, "nops_chaos_injections_total", `target="redis"`, `kind="error"`); v < 1 {
		t.Fatalf("%v Redis faults injected, want at least one", v)
	}
	setRules()
	if n := agents(); n != 1 {
		t.Fatalf("%d agents at the end, want 1", n)
	}
}
