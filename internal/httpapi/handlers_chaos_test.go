package httpapi

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/nops-kernel/nops/internal/chaos"
	"github.com/nops-kernel/nops/internal/control"
	"github.com/nops-kernel/nops/internal/store/sqlite"
)

func newChaosWorld(t *testing.T, enabled bool) (*managedWorld, *chaos.Chaos) {
	t.Helper()
	ch, err := chaos.New(enabled, nil)
	if err != nil {
		t.Fatal(err)
	}
	w := newManagedWorld(t, func(_ *testing.T, c *control.Control, _ *sqlite.Store) { c.Chaos = ch })
	return w, ch
}

func TestChaosToggles(t *testing.T) {
	w, ch := newChaosWorld(t, true)
	agentDown := map[string]any{"rules": []any{map[string]any{"target": "agent", "error_percent": 100}}}

	// Only a SUPER_ADMIN: a tenant's ADMIN, OPERATOR or VIEWER is refused, and nothing changes.
	for _, role := range []string{"ADMIN", "OPERATOR", "VIEWER"} {
		w.must(403, "GET", "/v1/admin/chaos", w.keys[role], nil)
		w.must(403, "PUT", "/v1/admin/chaos", w.keys[role], agentDown)
	}
	w.must(403, "PUT", "/v1/admin/chaos", w.otherAdmin, agentDown)
	if len(ch.Rules()) != 0 {
		t.Fatalf("refused PUTs set rules: %v", ch.Rules())
	}
	_, got := w.must(200, "GET", "/v1/admin/chaos", w.admin, nil)
	if got["enabled"] != true || len(got["rules"].([]any)) != 0 {
		t.Fatalf("chaos before any rule %v", got)
	}

	// Bad input names its field; nothing is set or recorded.
	for _, tc := range []struct {
		body  map[string]any
		field string
	}{
		{map[string]any{"rules": []any{map[string]any{"target": "agent", "error_percent": 101}}}, "body.rules.0.error_percent"},
		{map[string]any{"rules": []any{map[string]any{"target": "agent"}, map[string]any{"target": "agent"}}}, "body.rules.1.target"},
		{map[string]any{"rules": []any{map[string]any{"target": "disk"}}}, "body.rules.0.target"},
		{map[string]any{"rules": []any{map[string]any{"target": "bus", "latency_ms": 60001}}}, "body.rules.0.latency_ms"},
	} {
		_, p := w.must(400, "PUT", "/v1/admin/chaos", w.admin, tc.body)
		wantFields(t, p, tc.field)
	}
	if reasons := w.auditOf(w.admin, control.ActionChaosUpdate); len(reasons) != 0 || len(ch.Rules()) != 0 {
		t.Fatalf("invalid rules were set (%v) or recorded (%q)", ch.Rules(), reasons)
	}

	_, got = w.must(200, "PUT", "/v1/admin/chaos", w.admin, map[string]any{"rules": []any{
		map[string]any{"target": "agent", "error_percent": 100},
		map[string]any{"target": "redis", "latency_ms": 250, "latency_percent": 50},
	}})
	rules := got["rules"].([]any)
	if len(rules) != 2 || rules[1].(map[string]any)["latency_ms"] != float64(250) {
		t.Fatalf("rules after PUT %v", got)
	}
	if err := ch.Inject(context.Background(), chaos.Agent); !errors.Is(err, chaos.ErrInjected) {
		t.Fatalf("the agent rule is not in force: %v", err)
	}
	w.must(200, "PUT", "/v1/admin/chaos", w.admin, map[string]any{"rules": []any{}})
	if err := ch.Inject(context.Background(), chaos.Agent); err != nil || len(ch.Rules()) != 0 {
		t.Fatalf("after clearing: %v, %v", err, ch.Rules())
	}
	reasons := w.auditOf(w.admin, control.ActionChaosUpdate)
	if len(reasons) != 2 || !strings.Contains(reasons[0], "agent error 100%") || !strings.Contains(reasons[0], "redis error 0%, latency 250ms 50%") || !strings.Contains(reasons[1], "no faults") {
		t.Fatalf("audit of the changes %q", reasons)
	}
}

// Off in the configuration: GET says so and PUT is a 409 naming chaos.enabled; nothing recorded.
func TestChaosTogglesDisabled(t *testing.T) {
	w, ch := newChaosWorld(t, false)
	_, p := w.must(409, "PUT", "/v1/admin/chaos", w.admin, map[string]any{"rules": []any{map[string]any{"target": "database", "error_percent": 100}}})
	if detail, _ := p["detail"].(string); !strings.Contains(detail, "chaos.enabled") {
		t.Fatalf("problem %v, want it to name chaos.enabled", p)
	}
	_, got := w.must(200, "GET", "/v1/admin/chaos", w.admin, nil)
	if got["enabled"] != false || len(got["rules"].([]any)) != 0 || len(ch.Rules()) != 0 {
		t.Fatalf("chaos %v", got)
	}
	if reasons := w.auditOf(w.admin, control.ActionChaosUpdate); len(reasons) != 0 {
		t.Fatalf("a refused change was recorded: %q", reasons)
	}
}
