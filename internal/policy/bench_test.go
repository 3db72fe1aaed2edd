package policy_test

import (
	"fmt"
	"testing"

	"github.com/nops-kernel/nops/internal/policy"
)

// BenchmarkEvaluate measures one decision with 0, 1 and 10 policies applying to the request, none
// matching (the common case: every one is evaluated). Run:
//
//	go test -run '^$' -bench BenchmarkEvaluate -benchmem ./internal/policy
func BenchmarkEvaluate(b *testing.B) {
	exprs := []string{
		`capability == "payments.refund" && principal.role != "ADMIN"`,
		`principal.tenant == "ten_01jzfrzn000000000000000000" && request.method != "GET"`,
		`resource.labels.?env.orValue("") == "prod" && principal.labels.?clearance.orValue("") != "prod"`,
		`request.method == "DELETE" && request.time.getHours("Europe/Paris") < 9`,
		`!cidr("192.0.2.0/24").containsIP(request.ip) && request.mtls_id == "" && false`,
		`"agents:admin" in principal.scopes && action == "agents.delete"`,
		`principal.scopes.exists(s, s.startsWith("admin:"))`,
		`resource.criticality == "critical" && action.endsWith(".delete")`,
		`request.path.startsWith("/v1/internal/")`,
		`principal.kind == "api_key" && !request.signed && request.method != "GET"`,
	}
	for _, n := range []int{0, 1, 10} {
		b.Run(fmt.Sprintf("policies=%d", n), func(b *testing.B) {
			var ps []policy.Policy
			for i := range n {
				ps = append(ps, denyP(fmt.Sprintf("pol_%02d", i), "", exprs[i]))
			}
			e := newEngine(b, policy.Options{}, ps...)
			input := in(tenantA)
			input.Principal.Labels = map[string]string{"team": "web"}
			input.Resource.Labels = map[string]string{"env": "dev"}
			if d := e.Evaluate(b.Context(), input); !d.Allowed {
				b.Fatalf("decision %+v, want allowed", d)
			}
			b.ReportAllocs()
			for b.Loop() {
				e.Evaluate(b.Context(), input)
			}
		})
	}
}
