package e2e

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

// svidRevocation is an SVIDRevocation of api/kernel.yaml.
type svidRevocation struct {
	ID        string `json:"id"`
	Serial    string `json:"serial"`
	SPIFFEID  string `json:"spiffe_id"`
	TenantID  string `json:"tenant_id"`
	Reason    string `json:"reason"`
	RevokedAt string `json:"revoked_at"`
	ExpiresAt string `json:"expires_at"`
	Actor     string `json:"actor"`
}

func revocationsOn(t *testing.T, k *kerneltest.Kernel, auth string) []svidRevocation {
	t.Helper()
	resp, body := k.Do(t, "GET", "/v1/identity/revocations", nil, auth)
	mustStatus(t, resp, body, http.StatusOK)
	return decode[struct {
		Items []svidRevocation `json:"items"`
	}](t, body).Items
}

// TestRevocationAPIAcrossReplicas: a revocation recorded through one replica's API is stored in
// the shared PostgreSQL database, audited, and read back through another replica, with the
// tenants kept apart; the other replica records one the first reads too.
func TestRevocationAPIAcrossReplicas(t *testing.T) {
	dbURL := services.Postgres(t)
	secrets := t.TempDir()
	shared := func(c *config.Config) {
		c.Database.URL = dbURL
		c.Signing.KEKFile, c.APIKeys.PepperFile = filepath.Join(secrets, "kek.json"), filepath.Join(secrets, "pepper.json")
	}
	f := newFixture(t, shared)
	b := kerneltest.Start(t, shared)
	td := f.k.Config.Identity.TrustDomain
	other := newTenant(t, f.k, f.admin, "globex")
	_, otherAdmin := newKey(t, f.k, f.admin, other, "ADMIN", nil)

	resp, body := f.k.Do(t, "POST", "/v1/agents", agentSpec("alpha"), f.keys["ADMIN"])
	mustStatus(t, resp, body, http.StatusCreated)
	agent := decode[agentDoc](t, body).ID
	id := "spiffe://" + td + "/tenant/" + f.tenant + "/agent/" + agent

	// Replica A: the tenant's ADMIN revokes its agent's SPIFFE ID.
	resp, body = f.k.Do(t, "POST", "/v1/identity/revocations", map[string]any{"spiffe_id": id, "reason": "host compromised"}, f.keys["ADMIN"])
	mustStatus(t, resp, body, http.StatusCreated)
	rec := decode[svidRevocation](t, body)
	if rec.SPIFFEID != id || rec.TenantID != f.tenant || rec.Reason != "host compromised" || !strings.HasPrefix(rec.ID, "rev_") {
		t.Fatalf("revocation %+v", rec)
	}

	// Replica B reads it: the tenant's ADMIN and the SUPER_ADMIN see it, another tenant does not.
	if got := revocationsOn(t, b, f.keys["ADMIN"]); len(got) != 1 || got[0] != rec {
		t.Fatalf("replica B lists %+v for the tenant, want %+v", got, rec)
	}
	superB := "Authorization: Bearer " + b.Token(t, "")
	if got := revocationsOn(t, b, superB); len(got) != 1 || got[0].ID != rec.ID {
		t.Fatalf("replica B lists %+v for the SUPER_ADMIN", got)
	}
	if got := revocationsOn(t, b, otherAdmin); len(got) != 0 {
		t.Fatalf("replica B shows another tenant %+v", got)
	}
	if n := countAudit(t, b, f.keys["ADMIN"], "identity.svid.revoke", "identity/revocations/"+rec.ID); n != 1 {
		t.Fatalf("%d audit records of the revocation read through replica B, want 1", n)
	}

	// Refusals on B: another tenant's ID is 403 and audited in the caller's trail; a serial is
	// for the SUPER_ADMIN.
	resp, body = b.Do(t, "POST", "/v1/identity/revocations", map[string]any{"spiffe_id": id}, otherAdmin)
	mustStatus(t, resp, body, http.StatusForbidden)
	resp, body = b.Do(t, "POST", "/v1/identity/revocations", map[string]any{"serial": "abc"}, otherAdmin)
	mustStatus(t, resp, body, http.StatusForbidden)
	if n := countAudit(t, f.k, otherAdmin, "identity.svid.revoke", "identity/revocations"); n != 2 {
		t.Fatalf("%d denials in the other tenant's trail, want 2", n)
	}
	resp, body = b.Do(t, "POST", "/v1/identity/revocations", map[string]any{"spiffe_id": "spiffe://elsewhere.test/tenant/" + f.tenant + "/agent/" + agent}, f.keys["ADMIN"])
	mustStatus(t, resp, body, http.StatusBadRequest)
	if !strings.Contains(string(body), "body.spiffe_id") {
		t.Fatalf("a foreign trust domain: %s", body)
	}

	// Replica B: the SUPER_ADMIN revokes a serial; replica A reads it.
	resp, body = b.Do(t, "POST", "/v1/identity/revocations", map[string]any{"serial": "0xABC"}, superB)
	mustStatus(t, resp, body, http.StatusCreated)
	ser := decode[svidRevocation](t, body)
	got := revocationsOn(t, f.k, f.admin)
	if len(got) != 2 || got[0].ID != rec.ID || got[1] != ser || ser.Serial != "abc" || ser.TenantID != "" {
		t.Fatalf("replica A lists %+v, want %s then %+v", got, rec.ID, ser)
	}
}
