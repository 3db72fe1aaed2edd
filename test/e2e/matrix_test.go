package e2e

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/httpapi"
	"github.com/nops-kernel/nops/internal/principal"
	"github.com/nops-kernel/nops/internal/rbac"
)

// world is two tenants, each with an agent and an API key of every role.
type world struct {
	*fixture
	other      string            // tenant B
	otherKeys  map[string]string // role → header, tenant B
	agentA     string
	agentB     string
	keyIDA     string
	keyIDB     string
	secretsOfB []string      // strings that must never reach tenant A
	managed    matrixManaged // policies and request keys of A and B (matrix_managed_test.go)
}

func newWorld(t *testing.T, mutate ...func(*config.Config)) *world {
	t.Helper()
	w := &world{fixture: newFixture(t, mutate...), otherKeys: map[string]string{}}
	k := w.k
	w.other = newTenant(t, k, w.admin, "globex")
	for _, role := range []string{"ADMIN", "OPERATOR", "VIEWER"} {
		_, w.otherKeys[role] = newKey(t, k, w.admin, w.other, role, nil)
	}
	resp, body := k.Do(t, "POST", "/v1/agents", agentSpec("alpha"), w.keys["ADMIN"])
	mustStatus(t, resp, body, http.StatusCreated)
	w.agentA = decode[agentDoc](t, body).ID
	spec := agentSpec("secret-beta")
	spec["endpoint"] = "https://globex-internal.example/beta"
	resp, body = k.Do(t, "POST", "/v1/agents", spec, w.otherKeys["ADMIN"])
	mustStatus(t, resp, body, http.StatusCreated)
	w.agentB = decode[agentDoc](t, body).ID
	w.keyIDA, _ = newKey(t, k, w.keys["ADMIN"], "", "VIEWER", map[string]any{"name": "alpha-viewer"})
	w.keyIDB, _ = newKey(t, k, w.otherKeys["ADMIN"], "", "VIEWER", map[string]any{"name": "globex-viewer"})
	// What A could not know: B's names and endpoint (the ids A sends itself may be echoed, e.g.
	// in the problem's instance).
	w.secretsOfB = []string{"secret-beta", "globex-internal", "globex-viewer", "globex"}
	w.managed = newMatrixManaged(t, w)
	return w
}

// fill substitutes path parameters with the given tenant's objects.
func (w *world) fill(path string, tenantB bool) string {
	path = w.managed.fill(path, tenantB)
	agent, key, tenant := w.agentA, w.keyIDA, w.tenant
	if tenantB {
		agent, key, tenant = w.agentB, w.keyIDB, w.other
	}
	// Feature flags are kernel-wide, named by key: no tenant owns one, so both cases name the same.
	r := strings.NewReplacer("{agent_id}", agent, "{key_id}", key, "{tenant_id}", tenant, "{key}", "matrix.flag")
	return r.Replace(path)
}

// proofParams returns the query parameters the audit proof operations require.
func proofParams(path, sep string) string {
	if strings.HasPrefix(path, "/v1/audit/proof/") {
		return sep + "seq=0&from=1&to=1"
	}
	return ""
}

// body is sampleBody, with the bodies that name objects of tenant A (the caller's own tenant in
// the permission matrix; in the cross-tenant matrix, A's credentials naming B are refused first).
func (w *world) body(method, path string) any {
	if method == "POST" && path == "/v1/identity/revocations" {
		return map[string]any{"spiffe_id": "spiffe://nops.local/tenant/" + w.tenant + "/agent/" + w.agentA}
	}
	return sampleBody(method, path)
}

func sampleBody(method, path string) any {
	switch {
	case method == "POST" && path == "/v1/agents", method == "PUT" && strings.HasPrefix(path, "/v1/agents/"):
		return agentSpec("gamma")
	case method == "POST" && path == "/v1/api-keys":
		return map[string]any{"name": "k", "role": "VIEWER"}
	case method == "POST" && path == "/v1/tenants":
		return map[string]any{"name": "initech"}
	case method == "POST" && strings.HasSuffix(path, "/heartbeat"):
		return map[string]any{"in_flight": 1}
	case method == "POST" && path == "/v1/dlq/reprocess":
		return map[string]any{"all": true, "dry_run": true}
	case method == "POST" && path == "/v1/identity/svid":
		return map[string]any{"csr": "x"}
	case method == "POST" && path == "/v1/events/replay":
		return map[string]any{"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z", "consumer": "event-stats", "dry_run": true}
	}
	return matrixSampleBody(method, path)
}

// TestCrossTenantMatrix calls every /v1 operation of the spec that names an object, with tenant
// A's credentials on tenant B's object ids, and requires 404 (or 403 where A's role may not use
// the operation at all) with no byte of B's data in the answer. Operations added to the spec are
// covered without changing the test.
func TestCrossTenantMatrix(t *testing.T) {
	forEachStore(t, testCrossTenantMatrix)
}

func testCrossTenantMatrix(t *testing.T, store func(*config.Config)) {
	w := newWorld(t, store)
	contract, err := httpapi.NewContract()
	if err != nil {
		t.Fatal(err)
	}
	patterns := contract.Patterns()
	slices.Sort(patterns)
	checked := 0
	for _, pattern := range patterns {
		method, path, _ := strings.Cut(pattern, " ")
		if !strings.HasPrefix(path, "/v1/") {
			continue
		}
		secured, _ := contract.Security(pattern)
		if !secured {
			continue
		}
		for _, role := range []string{"ADMIN", "OPERATOR", "VIEWER"} {
			cases := map[string]string{}
			if strings.Contains(path, "{") {
				cases["B's object"] = w.fill(path, true)
			}
			if slices.Contains(contract.QueryParams(pattern), "tenant") {
				cases["B named as tenant"] = w.fill(path, false) + "?tenant=" + w.other + proofParams(path, "&")
			}
			if strings.Contains(path, "{") {
				cases["B's object"] += proofParams(path, "?")
			}
			for name, target := range cases {
				t.Run(pattern+"/"+role+"/"+name, func(t *testing.T) {
					headers := []string{w.keys[role]}
					if method == "PUT" {
						headers = append(headers, `If-Match: *`)
					}
					resp, body := w.k.Do(t, method, target, w.body(method, path), headers...)
					// A routing table is named by its capability within the caller's tenant: A's
					// conditional PUT finds no table of A's own (412), B's is not reached.
					ownName := method == "PUT" && strings.HasPrefix(path, "/v1/routes/") && resp.StatusCode == http.StatusPreconditionFailed
					if resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusForbidden && !ownName {
						t.Fatalf("status %d, want 404 (or 403); body %s", resp.StatusCode, body)
					}
					for _, s := range w.secretsOfB {
						if strings.Contains(string(body), s) {
							t.Fatalf("the answer leaks %q of tenant B: %s", s, body)
						}
					}
				})
				checked++
			}
		}
	}
	if checked < 20 {
		t.Fatalf("only %d cross-tenant calls were made: is the spec being read?", checked)
	}
	// B's objects are intact.
	resp, body := w.k.Do(t, "GET", "/v1/agents/"+w.agentB, nil, w.otherKeys["VIEWER"])
	mustStatus(t, resp, body, http.StatusOK)
	resp, body = w.k.Do(t, "GET", "/v1/api-keys/"+w.keyIDB, nil, w.otherKeys["ADMIN"])
	mustStatus(t, resp, body, http.StatusOK)
	resp, body = w.k.Do(t, "GET", "/v1/routes/"+matrixCapabilityB, nil, w.otherKeys["VIEWER"])
	mustStatus(t, resp, body, http.StatusOK)
	if !strings.Contains(string(body), `"revision":1`) {
		t.Errorf("tenant B's routing table changed: %s", body)
	}
}

// TestPermissionMatrix calls every secured operation with a key of each role, on the role's own
// tenant's objects, and requires exactly what rbac decides: 403 where the matrix denies, anything
// but 401/403 where it allows.
func TestPermissionMatrix(t *testing.T) {
	forEachStore(t, testPermissionMatrix)
}

func testPermissionMatrix(t *testing.T, store func(*config.Config)) {
	w := newWorld(t, store)
	contract, err := httpapi.NewContract()
	if err != nil {
		t.Fatal(err)
	}
	patterns := contract.Patterns()
	slices.Sort(patterns)
	for _, pattern := range patterns {
		method, path, _ := strings.Cut(pattern, " ")
		secured, scopes := contract.Security(pattern)
		if !secured {
			continue
		}
		for _, role := range []string{"ADMIN", "OPERATOR", "VIEWER"} {
			p := principal.Principal{Roles: []string{role}, Scopes: rbac.ScopesFor([]string{role})}
			allowed := rbac.Authorize(p, scopes).Allowed
			t.Run(pattern+"/"+role, func(t *testing.T) {
				headers := []string{w.keys[role]}
				if method == "PUT" {
					headers = append(headers, "If-Match: *")
				}
				target := w.fill(path, false) + proofParams(path, "?")
				resp, body := w.k.Do(t, method, target, w.body(method, path), headers...)
				switch {
				case allowed && (resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusUnauthorized):
					t.Fatalf("the matrix allows %s, the server answered %d: %s", role, resp.StatusCode, body)
				case !allowed && resp.StatusCode != http.StatusForbidden:
					t.Fatalf("the matrix denies %s, the server answered %d: %s", role, resp.StatusCode, body)
				}
			})
		}
	}
}
