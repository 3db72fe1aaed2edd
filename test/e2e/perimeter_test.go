package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/kernel"
	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
	"github.com/nops-kernel/nops/internal/telemetry"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

// perIP5 limits each client address to 5 requests an hour: within a test, the sixth is refused
// however slow the machine (a request comes back every 12 minutes).
func perIP5(c *config.Config) { c.Limits.PerIP = "5/1h" }

// behindProxy makes the test client (127.0.0.1) a trusted proxy whose own requests are exempt
// from the per-IP limit (a CIDR override of limit 0), so a test sets up its fixture freely and
// plays several clients through X-Forwarded-For.
func behindProxy(c *config.Config) {
	c.Limits.TrustedProxies = "127.0.0.1/32"
	c.Limits.Overrides = "cidr:127.0.0.1/32=0/1m"
}

// wantRateLimited checks a 429 of the per-IP rule "5/1h": problem+json, Retry-After, RateLimit
// (nothing left) and RateLimit-Policy.
func wantRateLimited(t *testing.T, resp *http.Response, body []byte) {
	t.Helper()
	wantProblem(t, resp, body, http.StatusTooManyRequests, "rate_limited", "rate limit exceeded")
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || s < 1 {
		t.Errorf("Retry-After %q, want a positive number of seconds", resp.Header.Get("Retry-After"))
	}
	if rl := resp.Header.Get("RateLimit"); !strings.HasPrefix(rl, `"per_ip";r=0;t=`) {
		t.Errorf("RateLimit %q, want the per_ip rule with r=0", rl)
	}
	if p := resp.Header.Get("RateLimit-Policy"); p != `"per_ip";q=5;w=3600` {
		t.Errorf("RateLimit-Policy %q, want \"per_ip\";q=5;w=3600", p)
	}
}

// metricValue sums the samples of the Prometheus metric name whose labels contain every
// label="value" pair of want.
func metricValue(t *testing.T, k *kerneltest.Kernel, name string, want ...string) float64 {
	t.Helper()
	resp, body := k.Do(t, "GET", "/metrics", nil)
	mustStatus(t, resp, body, http.StatusOK)
	var sum float64
	for line := range strings.SplitSeq(string(body), "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(line, w)
		}
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndex(line, " ")+1:], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

// A client that is not behind a trusted proxy is limited by its own address: exactly 5 requests
// pass, the sixth gets 429 with the IETF headers, and rotating spoofed X-Forwarded-For or
// Forwarded values does not give it a new bucket.
func TestRateLimitPerIPUntrustedPeer(t *testing.T) {
	k := kerneltest.Start(t, perIP5)
	for i := range 5 {
		// Unauthenticated: the per-IP limit applies before authentication, to every route.
		resp, body := k.Do(t, "GET", "/v1/agents", nil,
			fmt.Sprintf("X-Forwarded-For: 198.51.100.%d", i+1), fmt.Sprintf("Forwarded: for=192.0.2.%d", i+1))
		mustStatus(t, resp, body, http.StatusUnauthorized)
		if rl, want := resp.Header.Get("RateLimit"), fmt.Sprintf(`"per_ip";r=%d;t=`, 4-i); !strings.HasPrefix(rl, want) {
			t.Errorf("request %d: RateLimit %q, want prefix %s", i+1, rl, want)
		}
	}
	resp, body := k.Do(t, "GET", "/v1/agents", nil, "X-Forwarded-For: 198.51.100.99")
	wantRateLimited(t, resp, body)
	resp, body = k.Do(t, "POST", "/v1/auth/token", map[string]string{"username": "admin", "password": kerneltest.AdminPassword})
	wantRateLimited(t, resp, body) // login too: credential guessing is limited on every route
	// Probes and scrapes are never limited.
	resp, body = k.Do(t, "GET", "/health", nil)
	mustStatus(t, resp, body, http.StatusOK)
	if n := metricValue(t, k, "nops_ratelimit_blocked_total", `rule="per_ip"`); n != 2 {
		t.Errorf("nops_ratelimit_blocked_total{rule=per_ip} = %v, want 2", n)
	}
}

// Behind a trusted proxy the client is the X-Forwarded-For address: each address has its own
// bucket, and a flood of blocks of one address leaves one aggregated audit record.
func TestRateLimitTrustedProxyAndAudit(t *testing.T) {
	k := kerneltest.Start(t, perIP5, behindProxy)
	admin := "Authorization: Bearer " + k.Token(t, "")
	attacker, other := "X-Forwarded-For: 203.0.113.7", "X-Forwarded-For: 198.51.100.1, 203.0.113.8" // the rightmost untrusted hop counts
	for range 5 {
		resp, body := k.Do(t, "GET", "/v1/agents", nil, attacker)
		mustStatus(t, resp, body, http.StatusUnauthorized)
	}
	firstBlock := time.Now()
	const blocks = 25
	for range blocks {
		resp, body := k.Do(t, "GET", "/v1/agents", nil, attacker)
		wantRateLimited(t, resp, body)
	}
	lastBlock := time.Now()
	// Another address behind the same proxy, and the proxy itself, are not affected.
	resp, body := k.Do(t, "GET", "/v1/agents", nil, other)
	mustStatus(t, resp, body, http.StatusUnauthorized)
	resp, body = k.Do(t, "GET", "/v1/auth/whoami", nil, admin)
	mustStatus(t, resp, body, http.StatusOK)

	if n := metricValue(t, k, "nops_ratelimit_blocked_total", `rule="per_ip"`); n != blocks {
		t.Errorf("nops_ratelimit_blocked_total{rule=per_ip} = %v, want %d", n, blocks)
	}

	// The auditor writes records in order: once the barrier's record (blocks of a third address,
	// after all the attacker's) is there, every record of the attacker's blocks is too.
	barrier := "X-Forwarded-For: 203.0.113.9"
	for range 6 {
		k.Do(t, "GET", "/v1/agents", nil, barrier)
	}
	count := func(key string) (n int, reason string) {
		for _, r := range auditRecords(t, k, admin, "action=ratelimit.block").Items {
			if r.Resource == "rate-limit-keys/"+key {
				if r.Decision.Allowed {
					t.Errorf("a ratelimit.block record is an allow: %+v", r)
				}
				n++
				reason = r.Decision.Reason
			}
		}
		return n, reason
	}
	kerneltest.WaitFor(t, 10*time.Second, "the barrier's ratelimit.block record", func() bool {
		n, _ := count("ip:203.0.113.9")
		return n > 0
	})
	n, reason := count("ip:203.0.113.7")
	want := 1
	if firstBlock.Truncate(time.Hour) != lastBlock.Truncate(time.Hour) {
		want = 2 // the blocks straddled the rule's window boundary: one record per window
	}
	if n != want {
		t.Errorf("%d ratelimit.block records for %d blocks of one address in %d window(s), want %d", n, blocks, want, want)
	}
	if !strings.Contains(reason, "per_ip") {
		t.Errorf("the block record's reason %q does not name the rule", reason)
	}
}

// Two replicas on one Redis enforce one limit: with local counters each would let 5 requests of
// the address through.
func TestRateLimitSharedByReplicas(t *testing.T) {
	url, ns := services.RedisNamespace(t)
	shared := func(c *config.Config) {
		c.Redis.URL, c.Bus.Namespace, c.Limits.RedisPrefix = url, ns, ns+":rl:"
	}
	a := kerneltest.Start(t, perIP5, behindProxy, shared)
	b := kerneltest.Start(t, perIP5, behindProxy, shared)
	client := "X-Forwarded-For: 203.0.113.50"
	replicas := []*kerneltest.Kernel{a, b}
	for i := range 5 {
		resp, body := replicas[i%2].Do(t, "GET", "/v1/agents", nil, client)
		mustStatus(t, resp, body, http.StatusUnauthorized)
	}
	for i, k := range replicas {
		resp, body := k.Do(t, "GET", "/v1/agents", nil, client)
		if resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("replica %d let request %d of one address through: %d %s", i, 6+i, resp.StatusCode, body)
		}
		wantRateLimited(t, resp, body)
	}
	for i, k := range replicas {
		if n := metricValue(t, k, "nops_ratelimit_degraded_total"); n != 0 {
			t.Errorf("replica %d decided %v requests without Redis", i, n)
		}
	}
}

// policyFixture is a kernel stopped after setup, whose data directory a test restarts with
// policy files that name what the setup created.
type policyFixture struct {
	dataDir              string
	acme, beta           string // tenant IDs
	acmeAdmin, betaAdmin string // "X-API-Key: …"
	frozen, prod, crit   string // agent IDs of acme
}

func newPolicyFixture(t *testing.T) policyFixture {
	t.Helper()
	pf := policyFixture{dataDir: t.TempDir()}
	t.Run("setup", func(t *testing.T) {
		f := newFixture(t, func(c *config.Config) { c.DataDir = pf.dataDir })
		pf.acme, pf.acmeAdmin = f.tenant, f.keys["ADMIN"]
		pf.beta = newTenant(t, f.k, f.admin, "beta")
		_, pf.betaAdmin = newKey(t, f.k, f.admin, pf.beta, "ADMIN", nil)
		pf.frozen = newAgent(t, f.k, pf.acmeAdmin, "frozen", map[string]string{"lock": "frozen"}, "")
		pf.prod = newAgent(t, f.k, pf.acmeAdmin, "prod", map[string]string{"env": "prod"}, "")
		pf.crit = newAgent(t, f.k, pf.acmeAdmin, "crit", map[string]string{"env": "prod"}, "critical")
	}) // the kernel stops here
	if t.Failed() {
		t.FailNow()
	}
	return pf
}

func writePolicies(t *testing.T, yaml string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "policies.yaml"), []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Policies from files deny by resource label, tenant and action (with the agent's criticality);
// each denial is a 403 naming the policy, audited with the policy's id. (A policy that could run
// too long is refused when loaded, see TestBrokenPolicyFileRefusedAtStart; the runtime cut-off
// needs inputs beyond the estimate's size bounds, which no HTTP request can carry, so
// internal/policy's TestCostLimitCutsOff covers it.)
func TestPoliciesDeny(t *testing.T) {
	pf := newPolicyFixture(t)
	dir := writePolicies(t, fmt.Sprintf(`
policies:
  - id: deny-frozen-label
    name: frozen-agents-are-untouchable
    effect: deny
    expression: resource.labels.?lock.orValue("") == "frozen"
  - id: deny-beta-reads
    name: beta-may-not-list
    effect: deny
    expression: principal.tenant == %q && action == "agents.list"
  - id: deny-critical-deletes
    name: critical-agents-through-change-management
    tenant: %s
    effect: deny
    expression: action == "agents.delete" && resource.criticality == "critical"
  - id: deny-refunds
    name: refunds-need-an-admin
    effect: deny
    expression: capability == "payments.refund" && principal.role != "ADMIN"
`, pf.beta, pf.acme))
	k := kerneltest.Start(t, func(c *config.Config) { c.DataDir, c.Policy.Dir = pf.dataDir, dir })

	tests := []struct {
		name, method, path, auth, policy string
	}{
		{"label", "GET", "/v1/agents/" + pf.frozen, pf.acmeAdmin, "deny-frozen-label"},
		{"tenant", "GET", "/v1/agents", pf.betaAdmin, "deny-beta-reads"},
		{"action and criticality", "DELETE", "/v1/agents/" + pf.crit, pf.acmeAdmin, "deny-critical-deletes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := k.Do(t, tt.method, tt.path, nil, tt.auth)
			wantProblem(t, resp, body, http.StatusForbidden, "forbidden", "denied by policy "+tt.policy)
		})
	}
	t.Run("allowed", func(t *testing.T) {
		for _, path := range []string{"/v1/agents/" + pf.prod, "/v1/agents"} {
			resp, body := k.Do(t, "GET", path, nil, pf.acmeAdmin)
			mustStatus(t, resp, body, http.StatusOK)
		}
		resp, body := k.Do(t, "GET", "/v1/agents/"+pf.crit, nil, pf.betaAdmin) // another tenant's: 404, not a policy's 403
		mustStatus(t, resp, body, http.StatusNotFound)
	})
	t.Run("audited with the policy", func(t *testing.T) {
		for _, c := range []struct{ auth, policy, resource string }{
			{pf.acmeAdmin, "deny-frozen-label", "GET /v1/agents/" + pf.frozen},
			{pf.acmeAdmin, "deny-critical-deletes", "DELETE /v1/agents/" + pf.crit},
			{pf.betaAdmin, "deny-beta-reads", "GET /v1/agents"},
		} {
			found := false
			for _, r := range auditRecords(t, k, c.auth, "action=auth.authorize&decision=deny").Items {
				if strings.Contains(r.Decision.Reason, "policy "+c.policy) && (c.resource == "" || r.Resource == c.resource) {
					found = true
				}
			}
			if !found {
				t.Errorf("no auth.authorize denial naming %s on %q in the tenant's audit trail", c.policy, c.resource)
			}
		}
	})
}

// A policy file that does not compile keeps the kernel from starting, with the compiler's
// message naming the file, the policy and the position.
func TestBrokenPolicyFileRefusedAtStart(t *testing.T) {
	for _, tt := range []struct{ name, expr, want string }{
		{"undefined field", `principal.rolee == "ADMIN"`, "undefined field 'rolee'"},
		{"not a bool", `principal.role`, "bool"},
		{"too expensive", `principal.scopes.all(a, principal.scopes.all(b, principal.labels.all(c, a != b)))`, "exceeds the limit"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := writePolicies(t, "policies:\n  - name: broken\n    effect: deny\n    expression: '"+tt.expr+"'\n")
			cfg := config.Default()
			cfg.DataDir, cfg.HTTP.Addr, cfg.Policy.Dir = t.TempDir(), "127.0.0.1:0", dir
			cfg.Auth.BootstrapAdminPassword = kerneltest.AdminPassword
			logs := &kerneltest.Buffer{}
			k, err := kernel.New(context.Background(), cfg, kernel.Options{Logger: telemetry.NewLogger(logs, slog.LevelInfo), Out: logs})
			if err == nil {
				_ = k.Close()
				t.Fatalf("a kernel started with the policy %s", tt.expr)
			}
			if msg := err.Error(); !strings.Contains(msg, "policy.dir") || !strings.Contains(msg, "broken") || !strings.Contains(msg, tt.want) {
				t.Errorf("start error %q lacks policy.dir, the policy's name or %q", msg, tt.want)
			}
		})
	}
}
