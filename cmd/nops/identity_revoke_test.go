package main

import (
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
)

// TestIdentityRevokeCLI: a tenant's ADMIN revokes an agent's SPIFFE ID of its tenant and lists
// it; a SUPER_ADMIN revokes a serial and lists every entry, or one tenant's with --tenant; the
// refusals are one clear error each.
func TestIdentityRevokeCLI(t *testing.T) {
	k := kerneltest.Start(t)
	admin := "Bearer " + k.Token(t, "")
	resp, body := k.Do(t, "POST", "/v1/tenants", map[string]any{"name": "acme"}, "Authorization: "+admin)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create tenant: %d %s", resp.StatusCode, body)
	}
	tenantID := fromJSON[idName](t, string(body)).ID
	resp, body = k.Do(t, "POST", "/v1/api-keys?tenant="+tenantID, map[string]any{"name": "ops", "role": "ADMIN"}, "Authorization: "+admin)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create key: %d %s", resp.StatusCode, body)
	}
	adminKey := fromJSON[struct {
		Secret string `json:"secret"`
	}](t, string(body)).Secret
	td := k.Config.Identity.TrustDomain
	agentID := "spiffe://" + td + "/tenant/" + tenantID + "/agent/agt_01jz0000000000000000000000"
	tenantEnv := map[string]string{"NOPS_SERVER": k.URL, "NOPS_API_KEY": adminKey}
	superEnv := map[string]string{"NOPS_SERVER": k.URL, "NOPS_TOKEN": strings.TrimPrefix(admin, "Bearer ")}

	out, _ := ok(t, tenantEnv, "identity", "revoke", "--spiffe-id", agentID, "--reason", "key leaked")
	if !regexp.MustCompile(`(?m)^ID\s+rev_[0-9a-z]{26}$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^REVOKED\s+`+regexp.QuoteMeta(agentID)+`$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^TENANT\s+`+tenantID+`$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^REASON\s+key leaked$`).MatchString(out) {
		t.Fatalf("identity revoke:\n%s", out)
	}
	out, _ = ok(t, superEnv, "identity", "revoke", "--serial", "0x00ABCDEF", "-o", "json")
	if doc := fromJSON[revocationDoc](t, out); doc.Serial != "abcdef" || doc.TenantID != "" || doc.SPIFFEID != "" {
		t.Fatalf("identity revoke --serial -o json: %s", out)
	}

	// The tenant lists its own; the SUPER_ADMIN both, or the tenant's with --tenant (by name).
	out, _ = ok(t, tenantEnv, "identity", "revocations")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 || !strings.Contains(lines[1], agentID) || !strings.Contains(lines[1], "key leaked") {
		t.Fatalf("identity revocations (tenant):\n%s", out)
	}
	out, _ = ok(t, superEnv, "identity", "revocations", "--page-size", "1")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 3 || !strings.Contains(out, "serial abcdef") {
		t.Fatalf("identity revocations (SUPER_ADMIN):\n%s", out)
	}
	out, _ = ok(t, superEnv, "identity", "revocations", "--tenant", "acme", "-o", "json")
	if items := fromJSON[struct {
		Items []revocationDoc `json:"items"`
	}](t, out).Items; len(items) != 1 || items[0].SPIFFEID != agentID {
		t.Fatalf("identity revocations --tenant acme -o json: %s", out)
	}

	// Refusals.
	fails(t, tenantEnv, "identity", "revoke")
	fails(t, tenantEnv, "identity", "revoke", "--serial", "ab", "--spiffe-id", agentID)
	_, errOut := fails(t, tenantEnv, "identity", "revoke", "--serial", "abcdef")
	if !strings.Contains(errOut, "Forbidden") {
		t.Errorf("a tenant's serial revocation: %q", errOut)
	}
	_, errOut = fails(t, tenantEnv, "identity", "revoke", "--spiffe-id", "spiffe://elsewhere.test/tenant/"+tenantID+"/agent/a")
	if !strings.Contains(errOut, "body.spiffe_id") {
		t.Errorf("a foreign trust domain: %q", errOut)
	}
	_, errOut = fails(t, tenantEnv, "identity", "revoke", "--serial", "12:34")
	if !strings.Contains(errOut, "body.serial") {
		t.Errorf("a malformed serial: %q", errOut)
	}
}
