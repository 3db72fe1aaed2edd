package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
)

// fixture is a kernel with one tenant and an API key of each role in it.
type fixture struct {
	k      *kerneltest.Kernel
	admin  string // SUPER_ADMIN bearer header
	tenant string
	keys   map[string]string // role → "X-API-Key: …" header
}

func decode[T any](t *testing.T, body []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	return v
}

func mustStatus(t *testing.T, resp *http.Response, body []byte, want int) {
	t.Helper()
	if resp.StatusCode != want {
		t.Fatalf("%s %s: status %d, want %d; body %s", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, want, body)
	}
}

func newTenant(t *testing.T, k *kerneltest.Kernel, admin, name string) string {
	t.Helper()
	resp, body := k.Do(t, "POST", "/v1/tenants", map[string]string{"name": name, "display_name": "Tenant " + name}, admin)
	mustStatus(t, resp, body, http.StatusCreated)
	return decode[struct {
		ID string `json:"id"`
	}](t, body).ID
}

func newKey(t *testing.T, k *kerneltest.Kernel, auth, tenant, role string, extra map[string]any) (id, header string) {
	t.Helper()
	req := map[string]any{"name": strings.ToLower(role) + "-key", "role": role}
	for k, v := range extra {
		req[k] = v
	}
	path := "/v1/api-keys"
	if tenant != "" {
		path += "?tenant=" + tenant
	}
	resp, body := k.Do(t, "POST", path, req, auth)
	mustStatus(t, resp, body, http.StatusCreated)
	out := decode[struct {
		ID     string `json:"id"`
		Secret string `json:"secret"`
	}](t, body)
	if !strings.HasPrefix(out.Secret, "nops_") {
		t.Fatalf("secret %q lacks the nops_ prefix", out.Secret)
	}
	return out.ID, "X-API-Key: " + out.Secret
}

func newFixture(t *testing.T, mutate ...func(*config.Config)) *fixture {
	t.Helper()
	k := kerneltest.Start(t, mutate...)
	f := &fixture{k: k, admin: "Authorization: Bearer " + k.Token(t, ""), keys: map[string]string{}}
	f.tenant = newTenant(t, k, f.admin, "acme")
	for _, role := range []string{"ADMIN", "OPERATOR", "VIEWER"} {
		_, f.keys[role] = newKey(t, k, f.admin, f.tenant, role, nil)
	}
	return f
}

func agentSpec(name string) map[string]any {
	return map[string]any{
		"name":        name,
		"version":     "v1.2.0",
		"endpoint":    "https://agents.example.com/" + name,
		"criticality": "essential",
		"labels":      map[string]string{"env": "prod"},
		"capabilities": []map[string]any{{
			"name":         "text.summarize",
			"description":  "Summarise a text",
			"input_schema": map[string]any{"type": "object", "properties": map[string]any{"text": map[string]any{"type": "string"}}},
		}},
	}
}

type agentDoc struct {
	ID       string `json:"id"`
	Tenant   string `json:"tenant"`
	Name     string `json:"name"`
	Version  string `json:"version"`
	Status   string `json:"status"`
	Revision int64  `json:"revision"`
}

func TestAgentLifecycle(t *testing.T) {
	f := newFixture(t)
	k, admin := f.k, f.keys["ADMIN"]

	resp, body := k.Do(t, "POST", "/v1/agents", agentSpec("summarizer"), admin)
	mustStatus(t, resp, body, http.StatusCreated)
	a := decode[agentDoc](t, body)
	etag := resp.Header.Get("ETag")
	if a.Tenant != f.tenant || a.Version != "1.2.0" || a.Status != "healthy" || etag == "" {
		t.Fatalf("registered %+v etag %q", a, etag)
	}

	resp, body = k.Do(t, "POST", "/v1/agents", agentSpec("summarizer"), admin)
	mustStatus(t, resp, body, http.StatusConflict)

	resp, body = k.Do(t, "POST", "/v1/agents", map[string]any{"name": "x", "version": "1.0.0", "endpoint": "https://a.example", "id": "agt_forged"}, admin)
	mustStatus(t, resp, body, http.StatusBadRequest)
	resp, body = k.Do(t, "POST", "/v1/agents", map[string]any{"name": "x", "version": "1.0.0", "endpoint": "https://user:pw@a.example"}, admin)
	mustStatus(t, resp, body, http.StatusBadRequest)
	if p := decodeProblem(t, resp, body); len(p.Errors) == 0 || p.Errors[0].Name != "body.endpoint" {
		t.Errorf("userinfo endpoint: %+v", p)
	}

	resp, body = k.Do(t, "GET", "/v1/agents/"+a.ID, nil, f.keys["VIEWER"])
	mustStatus(t, resp, body, http.StatusOK)
	if resp.Header.Get("ETag") != etag {
		t.Errorf("GET ETag %q, want %q", resp.Header.Get("ETag"), etag)
	}

	upd := agentSpec("summarizer")
	upd["version"] = "1.3.0"
	resp, body = k.Do(t, "PUT", "/v1/agents/"+a.ID, upd, admin, "If-Match: "+etag)
	mustStatus(t, resp, body, http.StatusOK)
	if decode[agentDoc](t, body).Revision != 2 {
		t.Errorf("revision after update: %s", body)
	}
	resp, body = k.Do(t, "PUT", "/v1/agents/"+a.ID, upd, admin, "If-Match: "+etag)
	mustStatus(t, resp, body, http.StatusPreconditionFailed)

	resp, body = k.Do(t, "POST", "/v1/agents/"+a.ID+"/heartbeat", map[string]any{"in_flight": 3, "p50_ms": 12.5, "p95_ms": 40, "error_rate": 0.01}, f.keys["OPERATOR"])
	mustStatus(t, resp, body, http.StatusOK)
	resp, body = k.Do(t, "POST", "/v1/agents/"+a.ID+"/heartbeat", map[string]any{"error_rate": 2}, f.keys["OPERATOR"])
	mustStatus(t, resp, body, http.StatusBadRequest)

	resp, body = k.Do(t, "GET", "/v1/agents?capability=text.summarize&selector=env%3Dprod", nil, f.keys["VIEWER"])
	mustStatus(t, resp, body, http.StatusOK)
	if n := len(decode[struct{ Items []agentDoc }](t, body).Items); n != 1 {
		t.Errorf("list matched %d agents, want 1", n)
	}
	resp, body = k.Do(t, "GET", "/v1/agents?selector=env%3Dstaging", nil, f.keys["VIEWER"])
	mustStatus(t, resp, body, http.StatusOK)
	if n := len(decode[struct{ Items []agentDoc }](t, body).Items); n != 0 {
		t.Errorf("selector env=staging matched %d agents", n)
	}

	// VIEWER may read but not write; OPERATOR may not create keys.
	resp, body = k.Do(t, "DELETE", "/v1/agents/"+a.ID, nil, f.keys["VIEWER"])
	mustStatus(t, resp, body, http.StatusForbidden)
	resp, body = k.Do(t, "POST", "/v1/api-keys", map[string]any{"name": "n", "role": "VIEWER"}, f.keys["OPERATOR"])
	mustStatus(t, resp, body, http.StatusForbidden)

	resp, body = k.Do(t, "DELETE", "/v1/agents/"+a.ID, nil, admin)
	mustStatus(t, resp, body, http.StatusNoContent)
	resp, body = k.Do(t, "GET", "/v1/agents/"+a.ID, nil, admin)
	mustStatus(t, resp, body, http.StatusNotFound)
}

func TestTenantSuspensionAndDeletion(t *testing.T) {
	f := newFixture(t)
	k := f.k
	resp, body := k.Do(t, "POST", "/v1/agents", agentSpec("worker"), f.keys["ADMIN"])
	mustStatus(t, resp, body, http.StatusCreated)

	// Tenants are SUPER_ADMIN's: a tenant ADMIN may not list them.
	resp, body = k.Do(t, "GET", "/v1/tenants", nil, f.keys["ADMIN"])
	mustStatus(t, resp, body, http.StatusForbidden)

	resp, body = k.Do(t, "POST", "/v1/tenants/"+f.tenant+"/suspend", nil, f.admin)
	mustStatus(t, resp, body, http.StatusOK)
	resp, body = k.Do(t, "GET", "/v1/agents", nil, f.keys["ADMIN"])
	mustStatus(t, resp, body, http.StatusForbidden)

	resp, body = k.Do(t, "POST", "/v1/tenants/"+f.tenant+"/resume", nil, f.admin)
	mustStatus(t, resp, body, http.StatusOK)
	resp, body = k.Do(t, "GET", "/v1/agents", nil, f.keys["ADMIN"])
	mustStatus(t, resp, body, http.StatusOK)

	resp, body = k.Do(t, "DELETE", "/v1/tenants/"+f.tenant, nil, f.admin)
	mustStatus(t, resp, body, http.StatusConflict)
	resp, body = k.Do(t, "DELETE", "/v1/tenants/"+f.tenant+"?cascade=true", nil, f.admin)
	mustStatus(t, resp, body, http.StatusNoContent)
	resp, body = k.Do(t, "GET", "/v1/tenants/"+f.tenant, nil, f.admin)
	mustStatus(t, resp, body, http.StatusNotFound)
	// The deleted tenant's keys no longer authenticate.
	resp, body = k.Do(t, "GET", "/v1/agents", nil, f.keys["ADMIN"])
	if resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusForbidden {
		t.Fatalf("key of a deleted tenant: %d %s", resp.StatusCode, body)
	}
}

func TestAPIKeyRotationGrace(t *testing.T) {
	forEachStore(t, testAPIKeyRotationGrace)
}

func testAPIKeyRotationGrace(t *testing.T, store func(*config.Config)) {
	f := newFixture(t, store)
	k := f.k
	id, old := newKey(t, k, f.keys["ADMIN"], "", "VIEWER", nil)

	// Rotation with the default grace: both secrets work.
	resp, body := k.Do(t, "POST", "/v1/api-keys/"+id+"/rotate", nil, f.keys["ADMIN"])
	mustStatus(t, resp, body, http.StatusOK)
	fresh := "X-API-Key: " + decode[struct{ Secret string }](t, body).Secret
	for name, h := range map[string]string{"old": old, "new": fresh} {
		resp, body := k.Do(t, "GET", "/v1/agents", nil, h)
		mustStatus(t, resp, body, http.StatusOK)
		_ = name
	}

	// A rotation with a short grace: the previous secret stops working once it has passed.
	resp, body = k.Do(t, "POST", "/v1/api-keys/"+id+"/rotate", map[string]string{"grace_period": "1s"}, f.keys["ADMIN"])
	mustStatus(t, resp, body, http.StatusOK)
	newest := "X-API-Key: " + decode[struct{ Secret string }](t, body).Secret
	kerneltest.WaitFor(t, 10*time.Second, "previous secret refused after its grace", func() bool {
		resp, _ := k.Do(t, "GET", "/v1/agents", nil, fresh)
		return resp.StatusCode == http.StatusUnauthorized
	})
	resp, body = k.Do(t, "GET", "/v1/agents", nil, old)
	mustStatus(t, resp, body, http.StatusUnauthorized) // rotated out twice: gone at once
	resp, body = k.Do(t, "GET", "/v1/agents", nil, newest)
	mustStatus(t, resp, body, http.StatusOK)

	// Revoked: refused at once.
	resp, body = k.Do(t, "DELETE", "/v1/api-keys/"+id, nil, f.keys["ADMIN"])
	mustStatus(t, resp, body, http.StatusNoContent)
	resp, body = k.Do(t, "GET", "/v1/agents", nil, newest)
	mustStatus(t, resp, body, http.StatusUnauthorized)

	// An API key exchanges for a token carrying its tenant and role.
	_, viewer := newKey(t, k, f.keys["ADMIN"], "", "VIEWER", nil)
	resp, body = k.Do(t, "POST", "/v1/auth/token", map[string]string{"api_key": strings.TrimPrefix(viewer, "X-API-Key: ")})
	mustStatus(t, resp, body, http.StatusOK)
	tok := decode[struct {
		AccessToken string `json:"access_token"`
	}](t, body).AccessToken
	resp, body = k.Do(t, "GET", "/v1/auth/whoami", nil, "Authorization: Bearer "+tok)
	mustStatus(t, resp, body, http.StatusOK)
	if !strings.Contains(string(body), f.tenant) || !strings.Contains(string(body), "VIEWER") {
		t.Errorf("whoami of a key's token: %s", body)
	}
}
