package main

import (
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
)

// The rotation commands against a real kernel: SUPER_ADMIN rotates the token signing key and the
// CA's root; a tenant's ADMIN is refused with one clear error.
func TestRotationCLI(t *testing.T) {
	k := kerneltest.Start(t)
	admin := map[string]string{"NOPS_SERVER": k.URL, "NOPS_TOKEN": k.Token(t, "")}

	out, _ := ok(t, admin, "signing-keys", "list")
	if !regexp.MustCompile(`(?m)^KID\s+ALG\s+STATE`).MatchString(out) || !regexp.MustCompile(`(?m)^key_\S+\s+EdDSA\s+signing\s+store\s`).MatchString(out) {
		t.Fatalf("signing-keys list:\n%s", out)
	}
	out, _ = ok(t, admin, "signing-keys", "rotate")
	if !regexp.MustCompile(`(?m)^KID\s+key_`).MatchString(out) || !regexp.MustCompile(`(?m)^STATE\s+pending$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^SUPERSEDES\s+key_\S+ \(retires \d{4}-`).MatchString(out) {
		t.Fatalf("signing-keys rotate:\n%s", out)
	}
	out, _ = ok(t, admin, "signing-keys", "list", "-o", "json")
	keys := fromJSON[listOf[signingKeyDoc]](t, out).Items
	if len(keys) != 2 || keys[0].State != "signing" || keys[0].RetiresAt == nil || keys[1].State != "pending" {
		t.Fatalf("signing-keys list -o json after the rotation: %+v", keys)
	}
	_, errOut := fails(t, admin, "signing-keys", "rotate", "--algorithm", "RS256")
	if !strings.Contains(errOut, "body.algorithm") {
		t.Fatalf("rotate --algorithm RS256: %q", errOut)
	}

	out, _ = ok(t, admin, "identity", "rotate-ca")
	if !regexp.MustCompile(`(?m)^NEW ROOT\s+ca_\S+ \(expires `).MatchString(out) || !regexp.MustCompile(`(?m)^NEW INTERMEDIATE\s+ca_\S+ \(issues from \d{4}-`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^RETIRING ROOT\s+ca_\S+ \(leaves the bundle \d{4}-`).MatchString(out) || !regexp.MustCompile(`(?m)^SEQUENCE\s+2$`).MatchString(out) {
		t.Fatalf("identity rotate-ca:\n%s", out)
	}
	out, _ = ok(t, admin, "identity", "bundle", "--format", "pem")
	if n := strings.Count(out, "BEGIN CERTIFICATE"); n != 2 {
		t.Fatalf("the bundle after rotate-ca holds %d roots, want 2", n)
	}

	// A tenant's ADMIN may do neither.
	resp, body := k.Do(t, "POST", "/v1/tenants", map[string]any{"name": "acme"}, "Authorization: Bearer "+admin["NOPS_TOKEN"])
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create tenant: %d %s", resp.StatusCode, body)
	}
	tenantID := fromJSON[idName](t, string(body)).ID
	resp, body = k.Do(t, "POST", "/v1/api-keys?tenant="+tenantID, map[string]any{"name": "ops", "role": "ADMIN"}, "Authorization: Bearer "+admin["NOPS_TOKEN"])
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create key: %d %s", resp.StatusCode, body)
	}
	tenantAdmin := map[string]string{"NOPS_SERVER": k.URL, "NOPS_API_KEY": fromJSON[struct {
		Secret string `json:"secret"`
	}](t, string(body)).Secret}
	for _, args := range [][]string{{"signing-keys", "rotate"}, {"signing-keys", "list"}, {"identity", "rotate-ca"}} {
		if _, errOut := fails(t, tenantAdmin, args...); !strings.Contains(errOut, "Forbidden") {
			t.Errorf("nops %s as a tenant's ADMIN: %q, want Forbidden", strings.Join(args, " "), errOut)
		}
	}
}
