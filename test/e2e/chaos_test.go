package e2e

import (
	"context"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/kernel"
	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
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
