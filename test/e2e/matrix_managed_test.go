package e2e

import (
	"net/http"
	"strings"
	"testing"
)

// matrixManaged are the objects of the perimeter's managed state that the permission and
// cross-tenant matrices (matrix_test.go) call the operations of /v1/policies, /v1/request-keys,
// /v1/rate-limits and /v1/tenants/{id}/perimeter on: a policy and a request key in each tenant.
type matrixManaged struct {
	policyA, policyB string
	reqKeyA, reqKeyB string
}

// matrixCapabilityB is the capability tenant B has a routing table for (and A has nothing of):
// the {capability} of /v1/routes/{capability} and /v1/invoke/{capability}, and the {tool} of
// /v1/mcp/tools/{tool}/approval, in the matrices.
const matrixCapabilityB = "matrix.routed"

// matrixOverrideID is an override ID of the right shape: the override operations are the
// operator's only, so every role of the matrix gets 403 before the ID is looked at.
const matrixOverrideID = "rlo_01jz8y3w6v6r3b5q8x9k2m4n7a"

// newMatrixManaged creates the objects, with tenant B's names added to what must never reach
// tenant A.
func newMatrixManaged(t *testing.T, w *world) matrixManaged {
	t.Helper()
	var m matrixManaged
	m.policyA = matrixCreate(t, w, "/v1/policies", w.keys["ADMIN"], matrixPolicy("alpha-policy"))
	m.policyB = matrixCreate(t, w, "/v1/policies", w.otherKeys["ADMIN"], matrixPolicy("secret-globex-policy"))
	m.reqKeyA = matrixCreate(t, w, "/v1/request-keys", w.keys["ADMIN"], map[string]any{"alg": "hmac-sha256", "name": "alpha-signer"})
	m.reqKeyB = matrixCreate(t, w, "/v1/request-keys", w.otherKeys["ADMIN"], map[string]any{"alg": "hmac-sha256", "name": "secret-globex-signer"})
	resp, out := w.k.Do(t, "PUT", "/v1/routes/"+matrixCapabilityB, matrixRoute(), w.otherKeys["ADMIN"])
	mustStatus(t, resp, out, http.StatusCreated)
	w.secretsOfB = append(w.secretsOfB, "secret-globex-policy", "secret-globex-signer")
	return m
}

func matrixCreate(t *testing.T, w *world, path, auth string, body map[string]any) string {
	t.Helper()
	resp, out := w.k.Do(t, "POST", path, body, auth)
	mustStatus(t, resp, out, http.StatusCreated)
	return decode[struct {
		ID string `json:"id"`
	}](t, out).ID
}

// matrixPolicy is a deny policy that matches no request of the tests: once policies are
// enforced, it stands in nobody's way.
func matrixPolicy(name string) map[string]any {
	return map[string]any{"name": name, "effect": "deny", "expression": `action == "matrix.never"`}
}

// fill substitutes the path parameters of the managed-state operations with the given tenant's
// objects; it leaves other paths as they are. A request key and an API key share {key_id}.
func (m matrixManaged) fill(path string, tenantB bool) string {
	policy, reqKey := m.policyA, m.reqKeyA
	if tenantB {
		policy, reqKey = m.policyB, m.reqKeyB
	}
	if strings.HasPrefix(path, "/v1/request-keys/") {
		path = strings.ReplaceAll(path, "{key_id}", reqKey)
	}
	return strings.NewReplacer("{policy_id}", policy, "{override_id}", matrixOverrideID, "{capability}", matrixCapabilityB, "{tool}", matrixCapabilityB).Replace(path)
}

// matrixRoute is a routing table sending every 1.x agent the capability.
func matrixRoute() map[string]any {
	return map[string]any{"targets": []any{map[string]any{"version": "1", "weight": 1}}}
}

// matrixSampleBody is a valid body for the managed-state operations that take one, nil for others.
func matrixSampleBody(method, path string) any {
	switch {
	case method == "POST" && path == "/v1/policies", method == "PUT" && path == "/v1/policies/{policy_id}":
		return matrixPolicy("matrix-sample")
	case method == "POST" && path == "/v1/request-keys":
		return map[string]any{"alg": "hmac-sha256", "name": "matrix-sample"}
	case method == "POST" && path == "/v1/rate-limits":
		return map[string]any{"kind": "cidr", "target": "198.51.100.0/24", "limit": 1000, "period": "1m"}
	case method == "PUT" && path == "/v1/routes/{capability}":
		return matrixRoute()
	case method == "POST" && path == "/v1/mcp/tools/{tool}/approval":
		return map[string]any{"hash": strings.Repeat("0", 64)}
	case method == "PUT" && path == "/v1/tenants/{tenant_id}/perimeter":
		// Never require signatures here: the matrix's keys sign nothing.
		return map[string]any{"require_signatures": false, "gateway_origins": []string{"198.51.100.0/24"}}
	}
	return nil
}
