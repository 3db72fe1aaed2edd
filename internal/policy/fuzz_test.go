package policy_test

import (
	"errors"
	"testing"

	"github.com/nops-kernel/nops/internal/policy"
)

// FuzzCompile: compiling any string never panics, and anything it accepts evaluates without
// panicking to a decision.
func FuzzCompile(f *testing.F) {
	for _, s := range []string{
		`principal.role == "ADMIN"`,
		`principal.rolee == "ADMIN"`,
		`action == `,
		`principal.labels.?team.orValue("") == "ops"`,
		`[1,2,3].all(a, [1,2,3].all(b, a + b > 0))`,
		`cidr("10.0.0.0/8").containsIP(request.ip)`,
		`request.path.matches("^/v1/[a-z]+$")`,
		`request.time.getHours("Europe/Paris") >= 9`,
		`((((((((((true))))))))))`,
		`"\xff" == capability`,
		`principal.scopes.exists(s, s.startsWith("a")) ? true : false`,
		`1 / 0 == 1`,
		`dyn(principal).subject == "x"`,
		`policy.Principal{subject: "x"}.subject == principal.subject`,
	} {
		f.Add(s)
	}
	e, err := policy.NewEngine(nil, policy.Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, expr string) {
		err := e.Compile(expr)
		if err != nil {
			var ce *policy.CompileError
			if !errors.As(err, &ce) || len(ce.Messages) == 0 {
				t.Fatalf("Compile(%q) = %v, want a *CompileError with messages", expr, err)
			}
			return
		}
		eng := newEngine(t, policy.Options{}, denyP("fuzz", "", expr))
		_ = eng.Evaluate(t.Context(), in(tenantA))
	})
}

// FuzzParseFile: parsing any file never panics.
func FuzzParseFile(f *testing.F) {
	f.Add([]byte(goodFile))
	f.Add([]byte("tests:\n  - {name: t, input: {action: x, request: {time: 2026-01-01T00:00:00Z}}, expect: deny}\n"))
	f.Add([]byte("policies: [\n"))
	f.Add([]byte("&a [*a]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = policy.ParseFile("fuzz.yaml", data)
	})
}
