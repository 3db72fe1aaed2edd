package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"regexp"
	"strings"
	"testing"

	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
)

// TestPerimeterCLI drives the commands of the perimeter's managed state against a real kernel:
// policies, rate-limit overrides and request keys.
func TestPerimeterCLI(t *testing.T) {
	k := kerneltest.Start(t)
	dir := t.TempDir()
	base := map[string]string{"NOPS_SERVER": k.URL}
	admin := with(base, "NOPS_TOKEN", k.Token(t, ""))
	ok(t, admin, "tenants", "create", "acme")
	out, _ := ok(t, admin, "keys", "create", "--tenant", "acme", "--name", "ci", "--role", "ADMIN")
	tenantAdmin := with(base, "NOPS_API_KEY", secretOf(t, out))

	// Policies: refusals first, then create, list, get, delete.
	_, errOut := fails(t, tenantAdmin, "policies", "create", "--name", "broken", "--effect", "deny", "--expression", "principal.rolee == 1")
	if !strings.Contains(errOut, "body.expression") || !strings.Contains(errOut, "undefined field 'rolee'") {
		t.Fatalf("a policy that does not compile: %q", errOut)
	}
	fails(t, tenantAdmin, "policies", "create", "--name", "half")
	fails(t, tenantAdmin, "policies", "create", "-f", writeFile(t, dir, "p.json", `{"name":"x"}`), "--name", "y")
	out, _ = ok(t, tenantAdmin, "policies", "create", "--name", "no-critical-deletes", "--effect", "deny",
		"--expression", `action == "agents.delete" && resource.criticality == "critical"`, "-o", "json")
	pol := fromJSON[idName](t, out)
	if !strings.HasPrefix(pol.ID, "pol_") {
		t.Fatalf("policies create: %s", out)
	}
	ok(t, admin, "policies", "create", "-f", writeFile(t, dir, "global.json", `{"name":"global","effect":"deny","expression":"false"}`))
	out, _ = ok(t, tenantAdmin, "policies", "list")
	if !regexp.MustCompile(`(?m)^`+pol.ID+`\s+no-critical-deletes\s+deny\s+true\s+ten_`).MatchString(out) || strings.Contains(out, "global") {
		t.Fatalf("policies list of the tenant:\n%s", out)
	}
	out, _ = ok(t, admin, "policies", "list")
	if !strings.Contains(out, "global") || strings.Contains(out, pol.ID) {
		t.Fatalf("policies list of the SUPER_ADMIN (global):\n%s", out)
	}
	out, _ = ok(t, admin, "policies", "list", "--tenant", "acme")
	if !strings.Contains(out, pol.ID) {
		t.Fatalf("policies list --tenant acme:\n%s", out)
	}
	out, _ = ok(t, tenantAdmin, "policies", "get", pol.ID)
	if !regexp.MustCompile(`(?m)^ETAG\s+"\S+"$`).MatchString(out) || !strings.Contains(out, `resource.criticality == "critical"`) {
		t.Fatalf("policies get:\n%s", out)
	}
	_, errOut = fails(t, tenantAdmin, "policies", "delete", pol.ID, "--if-match", `"stale"`)
	if !strings.Contains(errOut, "Precondition Failed") {
		t.Fatalf("delete with a stale ETag: %q", errOut)
	}
	ok(t, tenantAdmin, "policies", "delete", pol.ID)
	fails(t, tenantAdmin, "policies", "get", pol.ID)

	// Rate-limit overrides: the operator's only.
	_, errOut = fails(t, tenantAdmin, "rate-limits", "list")
	if !strings.Contains(errOut, "Forbidden") {
		t.Fatalf("rate-limits list as a tenant's ADMIN: %q", errOut)
	}
	_, errOut = fails(t, admin, "rate-limits", "set", "--kind", "cidr", "--target", "10.0.0.1/8", "--limit", "5")
	if !strings.Contains(errOut, "body.target") {
		t.Fatalf("a bad target: %q", errOut)
	}
	out, errOut = ok(t, admin, "rate-limits", "set", "--kind", "cidr", "--target", "10.20.0.0/16", "--limit", "1000", "--period", "1m", "--burst", "100")
	id := regexp.MustCompile(`(?m)^ID\s+(rlo_\S+)$`).FindStringSubmatch(out)
	if id == nil || !strings.Contains(errOut, "created") {
		t.Fatalf("rate-limits set:\n%s%s", out, errOut)
	}
	_, errOut = ok(t, admin, "rate-limits", "set", "--kind", "cidr", "--target", "10.20.0.0/16", "--limit", "0")
	if !strings.Contains(errOut, "replaced") {
		t.Fatalf("rate-limits set again: %q", errOut)
	}
	out, _ = ok(t, admin, "rate-limits", "list")
	if !regexp.MustCompile(`(?m)^` + id[1] + `\s+cidr\s+10\.20\.0\.0/16\s+unlimited\s+0\s`).MatchString(out) {
		t.Fatalf("rate-limits list:\n%s", out)
	}
	ok(t, admin, "rate-limits", "delete", id[1])
	fails(t, admin, "rate-limits", "delete", id[1])

	// Request keys: an HMAC secret once; an Ed25519 key from a PEM file.
	out, errOut = ok(t, tenantAdmin, "request-keys", "create", "--name", "edge")
	secret := regexp.MustCompile(`(?m)^SECRET\s+(\S+)$`).FindStringSubmatch(out)
	keyID := regexp.MustCompile(`(?m)^ID\s+(rk_\S+)$`).FindStringSubmatch(out)
	if secret == nil || keyID == nil || !strings.Contains(errOut, "shown this once") {
		t.Fatalf("request-keys create:\n%s%s", out, errOut)
	}
	out, _ = ok(t, tenantAdmin, "request-keys", "get", keyID[1])
	if strings.Contains(out, secret[1]) || strings.Contains(out, "SECRET") {
		t.Fatalf("request-keys get shows the secret:\n%s", out)
	}
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	pubFile := writeFile(t, dir, "ci.pub", string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})))
	_, errOut = fails(t, tenantAdmin, "request-keys", "create", "--alg", "ed25519")
	if !strings.Contains(errOut, "body.public_key") {
		t.Fatalf("ed25519 without a public key: %q", errOut)
	}
	out, errOut = ok(t, tenantAdmin, "request-keys", "create", "--alg", "ed25519", "--name", "ci", "--public-key-file", pubFile)
	if strings.Contains(out, "SECRET") || strings.Contains(errOut, "shown this once") || !regexp.MustCompile(`(?m)^ALG\s+ed25519$`).MatchString(out) {
		t.Fatalf("request-keys create --alg ed25519:\n%s%s", out, errOut)
	}
	out, _ = ok(t, tenantAdmin, "request-keys", "list")
	if !regexp.MustCompile(`(?m)^`+keyID[1]+`\s+edge\s+hmac-sha256\s+-\s+active\s+1\s`).MatchString(out) || strings.Count(out, "rk_") != 2 {
		t.Fatalf("request-keys list:\n%s", out)
	}
	out, _ = ok(t, tenantAdmin, "request-keys", "rotate", keyID[1], "--grace", "1h")
	rotated := regexp.MustCompile(`(?m)^SECRET\s+(\S+)$`).FindStringSubmatch(out)
	if rotated == nil || rotated[1] == secret[1] || !regexp.MustCompile(`(?m)^GENERATION\s+2$`).MatchString(out) {
		t.Fatalf("request-keys rotate:\n%s", out)
	}
	ok(t, tenantAdmin, "request-keys", "revoke", keyID[1])
	_, errOut = fails(t, tenantAdmin, "request-keys", "revoke", keyID[1])
	if !strings.Contains(errOut, "Conflict") {
		t.Fatalf("revoking twice: %q", errOut)
	}
}
