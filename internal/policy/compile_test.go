package policy_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/nops-kernel/nops/internal/policy"
)

// Broken policies are refused with the compiler's message, located.
func TestCompileRefuses(t *testing.T) {
	e := newEngine(t, policy.Options{})
	tests := []struct {
		name, expr string
		want       []string // substrings of the message
	}{
		{"syntax error", `principal.role == `, []string{"1:19:", "Syntax error"}},
		{"syntax error on a later line", "principal.role == \"ADMIN\" &&\n  (action == ", []string{"2:", "Syntax error"}},
		{"unknown field", `principal.rolee == "ADMIN"`, []string{"1:10:", "undefined field 'rolee'"}},
		{"unknown field of request", `request.user_agent == ""`, []string{"undefined field 'user_agent'"}},
		{"unknown variable", `user.role == "ADMIN"`, []string{"undeclared reference to 'user'"}},
		{"type mismatch", `principal.scopes == "admin"`, []string{"no matching overload"}},
		{"not a bool: string", `principal.role`, []string{"must be a bool, not string"}},
		{"not a bool: int", `1 + 2`, []string{"must be a bool, not int"}},
		{"empty", "  \n", []string{"expression is empty"}},
		{"too long", strings.Repeat("true && ", policy.MaxExpressionLen/8) + "true", []string{"longer than"}},
		{"too deep", strings.Repeat("(", 200) + "true" + strings.Repeat(")", 200), []string{"recursion"}},
		{"bad constant CIDR", `cidr("10.0.0.0/99").containsIP(request.ip)`, []string{"cidr"}},
		{"bad constant regular expression", `request.path.matches("[")`, []string{"missing closing ]"}},
		{"estimated cost above the limit", `principal.scopes.all(a, principal.scopes.all(b, a != b || a == b))`,
			[]string{"estimated worst-case cost", "exceeds the limit 10000"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := e.Compile(tt.expr)
			var ce *policy.CompileError
			if !errors.As(err, &ce) {
				t.Fatalf("Compile(%q) = %v, want a *CompileError", tt.expr, err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Compile(%q) = %q, want it to contain %q", tt.expr, err, w)
				}
			}
		})
	}
}

func TestCompileAccepts(t *testing.T) {
	e := newEngine(t, policy.Options{})
	for _, expr := range []string{
		`principal.role == "ADMIN"`,
		`"agents:write" in principal.scopes && principal.kind == "api_key"`,
		`principal.labels.?team.orValue("") == "ops"`,
		`"team" in principal.labels && principal.labels["team"] == "ops"`,
		`resource.criticality == "critical" && action.startsWith("agents.")`,
		`request.time.getHours("Europe/Paris") >= 9 && request.time.getDayOfWeek("Europe/Paris") in [1, 2, 3, 4, 5]`,
		`request.time > timestamp("2026-01-01T00:00:00Z")`,
		`cidr("10.0.0.0/8").containsIP(request.ip) || ip(request.ip).isLoopback()`,
		`request.path.matches("^/v1/agents/[^/]+$") && request.signed && request.mtls_id != ""`,
		`principal.scopes.exists(s, s.startsWith("admin:"))`,
		`principal.tenant != resource.tenant && principal.tenant != ""`,
		`capability == "" || capability.lowerAscii().contains("refund")`,
	} {
		if err := e.Compile(expr); err != nil {
			t.Errorf("Compile(%q): %v", expr, err)
		}
	}
}

// The estimate can be switched off; the runtime limit remains (TestCostLimitCutsOff).
func TestEstimatedCostLimitOff(t *testing.T) {
	e := newEngine(t, noCostEstimate)
	if err := e.Compile(`principal.scopes.all(a, principal.scopes.all(b, a != b || a == b))`); err != nil {
		t.Fatalf("Compile with the estimate off: %v", err)
	}
}
