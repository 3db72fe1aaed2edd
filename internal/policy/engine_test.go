package policy_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/nops-kernel/nops/internal/policy"
)

// Denials first: each kind of deny policy the issue names gives a decision naming the policy.
func TestDenyNamesThePolicy(t *testing.T) {
	e := newEngine(t, policy.Options{},
		denyP("by-capability", "", `capability == "payments.refund"`),
		denyP("by-tenant", "", fmt.Sprintf(`principal.tenant == %q && action != "agents.read"`, tenantB)),
		denyP("by-label", "", `resource.labels.?env.orValue("") == "prod" && principal.labels.?clearance.orValue("") != "prod"`),
	)
	capIn := in(tenantA)
	capIn.Capability = "payments.refund"
	labelIn := in(tenantA)
	labelIn.Resource.Labels = map[string]string{"env": "prod"}
	cleared := labelIn
	cleared.Principal.Labels = map[string]string{"clearance": "prod"}
	readB := in(tenantB)
	readB.Action = "agents.read"

	tests := []struct {
		name     string
		in       policy.Input
		allowed  bool
		policyID string
	}{
		{"capability", capIn, false, "by-capability"},
		{"tenant", in(tenantB), false, "by-tenant"},
		{"label", labelIn, false, "by-label"},
		{"label with clearance", cleared, true, ""},
		{"tenant, reading", readB, true, ""},
		{"none applies", in(tenantA), true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := e.Evaluate(t.Context(), tt.in)
			if tt.allowed {
				wantDecision(t, d, true, "", "no deny policy matched")
				return
			}
			wantDecision(t, d, false, tt.policyID, "denied by policy "+tt.policyID)
			if d.PolicyName != "name of "+tt.policyID {
				t.Errorf("PolicyName = %q, want %q", d.PolicyName, "name of "+tt.policyID)
			}
		})
	}
}

func TestDenyOverridesAllow(t *testing.T) {
	e := newEngine(t, policy.Options{},
		allowP("a-allow-everything", "", `true`),
		denyP("z-deny-deletes", "", `action == "agents.delete"`),
	)
	del := in(tenantA)
	del.Action = "agents.delete"
	wantDecision(t, e.Evaluate(t.Context(), del), false, "z-deny-deletes", "denied by policy z-deny-deletes")
	wantDecision(t, e.Evaluate(t.Context(), in(tenantA)), true, "a-allow-everything", "allowed by policy a-allow-everything")
}

// With allow policies present, one must match: they form an allow-list.
func TestAllowListSemantics(t *testing.T) {
	e := newEngine(t, policy.Options{},
		allowP("office", tenantA, `cidr("192.0.2.0/24").containsIP(request.ip)`),
		allowP("mtls", tenantA, `request.mtls_id != ""`),
	)
	outside := in(tenantA)
	outside.Request.IP = "203.0.113.5"
	wantDecision(t, e.Evaluate(t.Context(), outside), false, "", "no allow policy matched")

	wantDecision(t, e.Evaluate(t.Context(), in(tenantA)), true, "office", "allowed by policy office")
	withMTLS := outside
	withMTLS.Request.MTLSID = "spiffe://a.example/agent"
	wantDecision(t, e.Evaluate(t.Context(), withMTLS), true, "mtls", "allowed by policy mtls")

	// Another tenant has no allow policy: its requests are allowed from anywhere.
	other := in(tenantB)
	other.Request.IP = "203.0.113.5"
	wantDecision(t, e.Evaluate(t.Context(), other), true, "", "no policies")
}

// Which policies apply: the principal's tenant's and the global ones; a principal above tenants
// answers to the global ones only, so a tenant cannot lock the operator out.
func TestPoliciesApplyByPrincipalTenant(t *testing.T) {
	e := newEngine(t, policy.Options{},
		denyP("a-denies-all", tenantA, `true`),
		denyP("global-denies-deletes", "", `action == "agents.delete"`),
	)
	wantDecision(t, e.Evaluate(t.Context(), in(tenantA)), false, "a-denies-all", "denied")
	wantDecision(t, e.Evaluate(t.Context(), in(tenantB)), true, "", "no deny policy matched")

	super := in(tenantA) // a SUPER_ADMIN acting on tenant A's agent
	super.Principal.Tenant, super.Principal.Role = "", "SUPER_ADMIN"
	wantDecision(t, e.Evaluate(t.Context(), super), true, "", "no deny policy matched")
	super.Action = "agents.delete"
	wantDecision(t, e.Evaluate(t.Context(), super), false, "global-denies-deletes", "denied")
	del := in(tenantB)
	del.Action = "agents.delete"
	wantDecision(t, e.Evaluate(t.Context(), del), false, "global-denies-deletes", "denied")
}

func TestDisabledPoliciesAreIgnored(t *testing.T) {
	off := denyP("off", "", `true`)
	off.Enabled = false
	e := newEngine(t, policy.Options{}, off)
	wantDecision(t, e.Evaluate(t.Context(), in(tenantA)), true, "", "no policies")
}

func TestNoPoliciesAllows(t *testing.T) {
	e := newEngine(t, policy.Options{})
	wantDecision(t, e.Evaluate(t.Context(), in(tenantA)), true, "", "no policies")
}

// A failing deny policy denies (fail closed); a failing allow policy does not match.
func TestEvaluationErrorSemantics(t *testing.T) {
	missingKey := `principal.labels["team"] == "ops"` // an error when the label is absent
	t.Run("deny policy fails closed", func(t *testing.T) {
		e := newEngine(t, policy.Options{}, denyP("needs-team", "", missingKey))
		d := e.Evaluate(t.Context(), in(tenantA))
		wantDecision(t, d, false, "needs-team", "could not be evaluated")
		if !strings.Contains(d.Reason, "no such key") {
			t.Errorf("reason %q does not say why", d.Reason)
		}
		withTeam := in(tenantA)
		withTeam.Principal.Labels = map[string]string{"team": "web"}
		wantDecision(t, e.Evaluate(t.Context(), withTeam), true, "", "no deny policy matched")
	})
	t.Run("allow policy does not match", func(t *testing.T) {
		e := newEngine(t, policy.Options{}, allowP("team-ops", "", `principal.labels["team"] == "ops"`))
		wantDecision(t, e.Evaluate(t.Context(), in(tenantA)), false, "", "no allow policy matched")
		e = newEngine(t, policy.Options{},
			allowP("a-team-ops", "", `principal.labels["team"] == "ops"`),
			allowP("b-operators", "", `principal.role == "OPERATOR"`))
		wantDecision(t, e.Evaluate(t.Context(), in(tenantA)), true, "b-operators", "allowed by policy b-operators")
	})
	t.Run("a cancelled evaluation of a deny policy denies", func(t *testing.T) {
		e := newEngine(t, noCostEstimate, denyP("loop", "", `principal.scopes.exists(s, s == "never")`))
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		big := in(tenantA)
		big.Principal.Scopes = make([]string, 10*policy.DefaultInterruptCheckFrequency)
		wantDecision(t, e.Evaluate(ctx, big), false, "loop", "could not be evaluated")
	})
}

// A policy that runs too long is cut off by the cost limit, and the request is denied.
func TestCostLimitCutsOff(t *testing.T) {
	// Four nested comprehensions over a list built in the expression: 10^4 iterations. The
	// estimate would refuse it at write time; with the estimate off, the runtime limit stops it.
	nested := `[1,2,3,4,5,6,7,8,9,10].all(a, [1,2,3,4,5,6,7,8,9,10].all(b, [1,2,3,4,5,6,7,8,9,10].all(c, [1,2,3,4,5,6,7,8,9,10].all(d, a + b + c + d > 0))))`
	for _, effect := range []policy.Effect{policy.EffectDeny, policy.EffectAllow} {
		t.Run(string(effect), func(t *testing.T) {
			reader := sdkmetric.NewManualReader()
			opts := noCostEstimate
			opts.Meter = sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("test")
			p := denyP("pol_expensive", "", nested)
			p.Effect = effect
			e := newEngine(t, opts, p)
			d := e.Evaluate(t.Context(), in(tenantA))
			wantDecision(t, d, false, "pol_expensive", "policy pol_expensive exceeded its cost limit")
			if n := counter(t, reader, "nops_policy_cost_exceeded_total", attribute.String("policy", "pol_expensive")); n != 1 {
				t.Errorf("nops_policy_cost_exceeded_total{policy=pol_expensive} = %d, want 1", n)
			}
			if n := counter(t, reader, "nops_policy_decisions_total", attribute.String("decision", "deny")); n != 1 {
				t.Errorf("nops_policy_decisions_total{decision=deny} = %d, want 1", n)
			}
		})
	}
	t.Run("inputs beyond the estimate's bounds", func(t *testing.T) {
		// Accepted by the estimate (64 scopes at most); a request carrying far more is cut off.
		e := newEngine(t, policy.Options{}, denyP("scan", "", `principal.scopes.exists(s, s.startsWith("admin:"))`))
		wantDecision(t, e.Evaluate(t.Context(), in(tenantA)), true, "", "no deny policy matched")
		big := in(tenantA)
		big.Principal.Scopes = make([]string, 100*policy.DefaultCostLimit)
		wantDecision(t, e.Evaluate(t.Context(), big), false, "scan", "exceeded its cost limit")
	})
	t.Run("a lower limit cuts off sooner", func(t *testing.T) {
		e := newEngine(t, policy.Options{CostLimit: 20, EstimatedCostLimit: 1000},
			denyP("scan", "", `principal.scopes.exists(s, s == "x")`))
		few := in(tenantA)
		few.Principal.Scopes = []string{"a"}
		wantDecision(t, e.Evaluate(t.Context(), few), true, "", "no deny policy matched")
		many := in(tenantA)
		many.Principal.Scopes = make([]string, 30)
		wantDecision(t, e.Evaluate(t.Context(), many), false, "scan", "exceeded its cost limit")
	})
}

// A store-backed engine refuses everything until it has read the store once, then follows it.
func TestStoreBackedEngine(t *testing.T) {
	st := newFakeStore()
	e, err := policy.NewEngine(st, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	wantDecision(t, e.Evaluate(t.Context(), in(tenantA)), false, "", "not loaded")

	st.setFailRead(errInjected)
	if err := e.Refresh(t.Context()); err == nil {
		t.Fatal("Refresh with a failing store succeeded")
	}
	wantDecision(t, e.Evaluate(t.Context(), in(tenantA)), false, "", "not loaded")

	st.setFailRead(nil)
	st.put(denyP("pol_1", tenantA, `action == "agents.update"`))
	if err := e.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	wantDecision(t, e.Evaluate(t.Context(), in(tenantA)), false, "pol_1", "denied")

	// Unchanged generation: no reload.
	reads := st.reads()
	if err := e.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if st.reads() != reads {
		t.Errorf("Refresh read every policy although the generation did not move")
	}

	// A failing store keeps the policies in force.
	st.setFailRead(errInjected)
	if err := e.Refresh(t.Context()); err == nil {
		t.Fatal("Refresh with a failing store succeeded")
	}
	wantDecision(t, e.Evaluate(t.Context(), in(tenantA)), false, "pol_1", "denied")
	st.setFailRead(nil)

	// Disabled in the store: gone from the decision.
	p := denyP("pol_1", tenantA, `action == "agents.update"`)
	p.Enabled, p.Version = false, 2
	st.put(p)
	if err := e.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	wantDecision(t, e.Evaluate(t.Context(), in(tenantA)), true, "", "no policies")

	// Enabled again, with another expression: compiled anew.
	p.Enabled, p.Version, p.Expression = true, 3, `action.startsWith("agents.")`
	st.put(p)
	if err := e.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	wantDecision(t, e.Evaluate(t.Context(), in(tenantA)), false, "pol_1", "denied")
}

// A stored policy that no longer compiles stays in force as a failing policy.
func TestBrokenStoredPolicy(t *testing.T) {
	st := newFakeStore()
	st.put(denyP("pol_broken_deny", tenantA, `principal.no_such_field == 1`))
	st.put(allowP("pol_broken_allow", tenantB, `principal.no_such_field == 1`))
	e, err := policy.NewEngine(st, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	wantDecision(t, e.Evaluate(t.Context(), in(tenantA)), false, "pol_broken_deny", "could not be evaluated")
	wantDecision(t, e.Evaluate(t.Context(), in(tenantB)), false, "", "no allow policy matched")
}

// Run refreshes on its own: a change another replica stores is in force within the interval.
func TestRunConverges(t *testing.T) {
	st := newFakeStore()
	e, err := policy.NewEngine(st, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx, 5*time.Millisecond) }()
	waitFor(t, "the first load", func() bool { return e.Evaluate(t.Context(), in(tenantA)).Allowed })
	st.put(denyP("pol_new", tenantA, `true`))
	waitFor(t, "the new policy in force", func() bool { return e.Evaluate(t.Context(), in(tenantA)).PolicyID == "pol_new" })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v, want nil after its context ends", err)
	}
}

// Evaluations run concurrently with refreshes and always see a whole snapshot (run with -race).
func TestEvaluateDuringRefresh(t *testing.T) {
	st := newFakeStore()
	e, err := policy.NewEngine(st, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				d := e.Evaluate(t.Context(), in(tenantA))
				// Both policies are written together below, so a snapshot holds both or neither.
				if !d.Allowed && d.PolicyID != "pol_a" {
					t.Errorf("decision %+v from a half-built snapshot", d)
				}
			}
		})
	}
	for i := range 50 {
		st.mu.Lock()
		st.policies["pol_a"] = denyP("pol_a", tenantA, fmt.Sprintf(`%d >= 0`, i))
		st.policies["pol_b"] = denyP("pol_b", tenantA, `true`)
		st.gen++
		st.mu.Unlock()
		if err := e.Refresh(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
}

// The perimeter loads a resource's labels and criticality only for tenants whose policies may
// read them.
func TestNeedsResourceAttributes(t *testing.T) {
	for _, c := range []struct {
		expr string
		want bool
	}{
		{`resource.labels["env"] == "prod"`, true},
		{`resource.criticality == "critical"`, true},
		{`has(resource.labels.env)`, true},
		{`resource.type == "agent" && action == "agents.delete"`, false},
		{`principal.role == "VIEWER"`, false},
		{`resource.tenant != principal.tenant`, false},
	} {
		e, err := policy.NewEngine(nil, policy.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.SetFilePolicies([]policy.FilePolicy{{Policy: policy.Policy{ID: "file:p", Name: "p", Effect: policy.EffectDeny, Expression: c.expr, Enabled: true}}}); err != nil {
			t.Fatalf("%s: %v", c.expr, err)
		}
		if got := e.NeedsResourceAttributes("ten_a"); got != c.want {
			t.Errorf("NeedsResourceAttributes with %q = %v, want %v", c.expr, got, c.want)
		}
	}
	e, err := policy.NewEngine(nil, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if e.NeedsResourceAttributes("ten_a") {
		t.Error("NeedsResourceAttributes without policies = true")
	}
}
