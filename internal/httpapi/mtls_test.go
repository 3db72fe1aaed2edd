package httpapi

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nops-kernel/nops/internal/mtls"
	"github.com/nops-kernel/nops/internal/policy"
	"github.com/nops-kernel/nops/internal/scope"
)

// mtlsWorld is the API twice over one store: as the API listener serves it (f) and as the mTLS
// listener serves it (m), whose verified client is whatever peer holds. The TLS side is
// internal/mtls's business and test/e2e/mtls_test.go's; here the peer is given.
type mtlsWorld struct {
	f, m   *flow
	td     spiffeid.TrustDomain
	peer   atomic.Pointer[mtls.Peer]
	admin  string // SUPER_ADMIN bearer, on f
	tenant string
	agentA string
	agentB string
}

const mtlsTestTD = "nops.test"

func newMTLSWorld(t *testing.T) *mtlsWorld {
	t.Helper()
	w := &mtlsWorld{f: newFlow(t), td: spiffeid.RequireTrustDomainFromString(mtlsTestTD)}
	h, err := MTLS(w.f.h, Workloads{TrustDomain: w.td, Peer: func(*http.Request) (mtls.Peer, bool) {
		p := w.peer.Load()
		if p == nil {
			return mtls.Peer{}, false
		}
		return *p, true
	}})
	if err != nil {
		t.Fatal(err)
	}
	m := *w.f
	m.h = h
	w.m = &m
	w.admin = w.f.login(map[string]any{"username": "admin", "password": flowAdminPassword})
	_, ten := w.f.must(201, "POST", "/v1/tenants", w.admin, map[string]any{"name": "acme"})
	w.tenant = ten["id"].(string)
	for _, name := range []string{"alpha", "beta"} {
		_, a := w.f.must(201, "POST", "/v1/agents?tenant="+w.tenant, w.admin, map[string]any{
			"name": name, "version": "1.0.0", "endpoint": "https://" + name + ".example/run",
			"capabilities": []any{map[string]any{"name": "text.summarize"}}})
		if name == "alpha" {
			w.agentA = a["id"].(string)
		} else {
			w.agentB = a["id"].(string)
		}
	}
	return w
}

// as makes the mTLS listener's verified client the SVID of id (a path below the trust domain).
func (w *mtlsWorld) as(path string) spiffeid.ID {
	id := spiffeid.RequireFromPath(w.td, path)
	w.peer.Store(&mtls.Peer{ID: id, Serial: "1f2e3d", NotBefore: time.Now().Add(-time.Minute),
		NotAfter: time.Now().Add(time.Hour).UTC().Truncate(time.Second)})
	return id
}

func (w *mtlsWorld) asAgent(agent string) spiffeid.ID {
	return w.as("/tenant/" + w.tenant + "/agent/" + agent)
}

// denials returns the reasons of the denied auth.authorize / auth.authenticate records of the
// tenant's tree (tenant "") or the global one.
func (w *mtlsWorld) denials(tenant, action string) []string {
	w.f.t.Helper()
	path := "/v1/audit?limit=500&decision=deny&action=" + action
	if tenant != "" {
		path += "&tenant=" + tenant
	}
	_, out := w.f.must(200, "GET", path, w.admin, nil)
	var reasons []string
	for _, it := range out["items"].([]any) {
		rec := it.(map[string]any)
		reasons = append(reasons, rec["actor"].(map[string]any)["principal"].(string)+" "+rec["resource"].(string)+": "+
			rec["decision"].(map[string]any)["reason"].(string))
	}
	return reasons
}

func containsLike(list []string, parts ...string) bool {
	return slices.ContainsFunc(list, func(s string) bool {
		for _, p := range parts {
			if !strings.Contains(s, p) {
				return false
			}
		}
		return true
	})
}

// An agent's SVID is the agent: its principal carries its ID, tenant, the scopes of the default
// table and no roles, and it may heartbeat itself.
func TestMTLSAgentPrincipal(t *testing.T) {
	w := newMTLSWorld(t)
	w.asAgent(w.agentA)
	_, who := w.m.must(200, "GET", "/v1/auth/whoami", "", nil)
	want := map[string]any{
		"subject": w.agentA, "tenant": w.tenant, "roles": []any{},
		"scopes": []any{"registry:heartbeat:" + w.tenant, "registry:read:" + w.tenant, "identity:renew:" + w.tenant,
			"identity:read:" + w.tenant, "invoke:*:" + w.tenant, "invocations:read:" + w.tenant},
		"expires_at": w.peer.Load().NotAfter.Format(time.RFC3339),
		"spiffe_id":  w.peer.Load().ID.String(),
	}
	if d := cmp.Diff(want, who); d != "" {
		t.Fatalf("whoami of an agent SVID (-want +got):\n%s", d)
	}
	_, hb := w.m.must(200, "POST", "/v1/agents/"+w.agentA+"/heartbeat", "", map[string]any{"in_flight": 1})
	if hb["agent_id"] != w.agentA {
		t.Fatalf("heartbeat %v", hb)
	}
	w.m.must(200, "GET", "/v1/agents/"+w.agentB, "", nil) // registry:read of its tenant
}

// Every refusal of a workload's operation is 403 naming why, and audited with the SPIFFE ID.
func TestMTLSScopeRefusals(t *testing.T) {
	w := newMTLSWorld(t)
	id := w.asAgent(w.agentA)
	tests := []struct {
		name, method, path string
		body               any
		detail, audited    string
	}{
		{"another agent's heartbeat", "POST", "/v1/agents/" + w.agentB + "/heartbeat", nil,
			"for itself only", "operation allowed on the caller itself only"},
		{"a scope not granted", "POST", "/v1/agents", map[string]any{"name": "gamma", "version": "1.0.0", "endpoint": "https://g.example/run"},
			"needs the scope registry:write:" + w.tenant, "missing scope registry:write:" + w.tenant},
		{"an operation not open to workloads", "GET", "/v1/api-keys", nil,
			"not open to workload identities", "operation not open to workload identities"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, out := w.m.call(tt.method, tt.path, "", tt.body)
			if out["status"] != float64(http.StatusForbidden) || !strings.Contains(out["detail"].(string), tt.detail) {
				t.Fatalf("%s %s: %v, want 403 saying %q", tt.method, tt.path, out, tt.detail)
			}
			if got := w.denials(w.tenant, "auth.authorize"); !containsLike(got, w.agentA+" "+tt.method+" "+tt.path+": "+id.String()+": "+tt.audited) {
				t.Fatalf("no audit record of the refusal among %q", got)
			}
		})
	}
}

// On the mTLS listener the certificate is the only credential: adding an API key or a token is
// refused as ambiguous, even a valid one of a more powerful principal.
func TestMTLSRefusesCredentialHeaders(t *testing.T) {
	w := newMTLSWorld(t)
	id := w.asAgent(w.agentA)
	for _, cred := range []string{w.admin, "key:nops_invalid"} {
		_, _, out := w.m.call("GET", "/v1/api-keys", cred, nil)
		if out["status"] != float64(http.StatusUnauthorized) || !strings.Contains(out["detail"].(string), "client certificate is the credential") {
			t.Fatalf("certificate plus %.12s…: %v, want 401", cred, out)
		}
	}
	if got := w.denials("", "auth.authenticate"); !containsLike(got, id.String()+" GET /v1/api-keys: credential headers on the mTLS listener") {
		t.Fatalf("refusal not audited: %q", got)
	}
}

// A SPIFFE ID of the trust domain that names neither an agent nor a kernel is granted nothing,
// even for operations any agent may call.
func TestMTLSUnknownWorkloadIsGrantedNothing(t *testing.T) {
	w := newMTLSWorld(t)
	for _, path := range []string{"/service/billing", "/tenant/" + "ten_x/agent/not-an-agent-id", "/kernel/a/b"} {
		id := w.as(path)
		_, _, out := w.m.call("GET", "/v1/auth/whoami", "", nil)
		if out["status"] != float64(http.StatusForbidden) || !strings.Contains(out["detail"].(string), "granted nothing") {
			t.Fatalf("%s: %v, want 403 granted nothing", id, out)
		}
		if got := w.denials("", "auth.authorize"); !containsLike(got, id.String()+" GET /v1/auth/whoami: SPIFFE ID names neither an agent nor a kernel") {
			t.Fatalf("%s: refusal not audited: %q", id, got)
		}
	}
}

// A workload of a suspended tenant is refused like an API key of that tenant.
func TestMTLSSuspendedTenant(t *testing.T) {
	w := newMTLSWorld(t)
	w.asAgent(w.agentA)
	w.m.must(200, "GET", "/v1/auth/whoami", "", nil)
	w.f.must(200, "POST", "/v1/tenants/"+w.tenant+"/suspend", w.admin, nil)
	w.m.eventually(http.StatusForbidden, "GET", "/v1/auth/whoami", "")
	if got := w.denials(w.tenant, "auth.authorize"); !containsLike(got, w.agentA+" GET /v1/auth/whoami: tenant suspended or deleted") {
		t.Fatalf("refusal not audited: %q", got)
	}
}

// A kernel's SVID is above tenants: it reads any tenant's registry when it names the tenant, and
// holds no agent's scopes (not even whoami's); its refusals name it by its SPIFFE ID.
func TestMTLSKernelPrincipal(t *testing.T) {
	w := newMTLSWorld(t)
	id := w.as("/kernel/node-2")
	_, list := w.m.must(200, "GET", "/v1/agents?tenant="+w.tenant, "", nil)
	if n := len(list["items"].([]any)); n != 2 {
		t.Fatalf("a kernel lists %d agents of the tenant, want 2", n)
	}
	w.m.must(403, "POST", "/v1/agents/"+w.agentA+"/heartbeat", "", nil)
	w.m.must(403, "GET", "/v1/auth/whoami", "", nil)
	if got := w.denials("", "auth.authorize"); !containsLike(got, id.String()+" GET /v1/auth/whoami: "+id.String()+": missing scope identity:read:*") {
		t.Fatalf("refusal not audited with the kernel's ID: %q", got)
	}
}

// Of the operations without a credential the mTLS listener serves the probes and the documents
// a workload needs; logins belong on the API listener.
func TestMTLSUnsecuredOperations(t *testing.T) {
	w := newMTLSWorld(t)
	w.asAgent(w.agentA)
	w.m.must(200, "GET", "/health", "", nil)
	w.m.must(200, "GET", "/.well-known/jwks.json", "", nil)
	_, _, out := w.m.call("POST", "/v1/auth/token", "", map[string]any{"username": "admin", "password": flowAdminPassword})
	if out["status"] != float64(http.StatusForbidden) || !strings.Contains(out["detail"].(string), "use the API listener") {
		t.Fatalf("login on the mTLS listener: %v, want 403", out)
	}
}

// Policies see a workload as such: kind "spiffe" and its SPIFFE ID as request.mtls_id; nothing
// of the kind off the mTLS listener.
func TestMTLSPolicyView(t *testing.T) {
	id := spiffeid.RequireFromPath(spiffeid.RequireTrustDomainFromString(mtlsTestTD), "/kernel/n")
	var seen []string
	h, err := MTLS(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		seen = append(seen, principalKind(r)+" "+mtlsID(r))
	}), Workloads{TrustDomain: id.TrustDomain(), Peer: func(*http.Request) (mtls.Peer, bool) { return mtls.Peer{ID: id}, true }})
	if err != nil {
		t.Fatal(err)
	}
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	api := httptest.NewRequest("GET", "/", nil)
	api.Header.Set("X-API-Key", "k")
	seen = append(seen, principalKind(api)+" "+mtlsID(api))
	if d := cmp.Diff([]string{policy.KindSPIFFE + " " + id.String(), policy.KindAPIKey + " "}, seen); d != "" {
		t.Fatalf("policy view (-want +got):\n%s", d)
	}
}

func TestMTLSWrapperNeedsATrustDomain(t *testing.T) {
	if _, err := MTLS(http.NotFoundHandler(), Workloads{}); err == nil {
		t.Fatal("MTLS accepted workloads without a trust domain")
	}
	bad := Workloads{TrustDomain: spiffeid.RequireTrustDomainFromString(mtlsTestTD), Table: scope.Table{scope.KindAgent: {"registry:read:{tenant}:x"}}}
	if _, err := MTLS(http.NotFoundHandler(), bad); err == nil {
		t.Fatal("MTLS accepted an invalid scope table")
	}
}
