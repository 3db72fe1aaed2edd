package main

import (
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
)

// nops keys force-rotate and nops keys expiring against a real kernel.
func TestKeysForceRotateCLI(t *testing.T) {
	k := kerneltest.Start(t)
	admin := map[string]string{"NOPS_SERVER": k.URL, "NOPS_TOKEN": k.Token(t, "")}
	resp, body := k.Do(t, "POST", "/v1/tenants", map[string]any{"name": "acme"}, "Authorization: Bearer "+admin["NOPS_TOKEN"])
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create tenant: %d %s", resp.StatusCode, body)
	}
	tenantID := fromJSON[idName](t, string(body)).ID
	resp, body = k.Do(t, "POST", "/v1/api-keys?tenant="+tenantID, map[string]any{"name": "agent", "role": "OPERATOR"}, "Authorization: Bearer "+admin["NOPS_TOKEN"])
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create key: %d %s", resp.StatusCode, body)
	}
	keyID := fromJSON[idName](t, string(body)).ID

	out, _ := ok(t, admin, "keys", "expiring")
	if strings.Contains(out, keyID) {
		t.Fatalf("expiring lists a key with no deadline:\n%s", out)
	}
	out, _ = ok(t, admin, "keys", "force-rotate", keyID, "--tenant", "acme", "--deadline", "2h")
	if !regexp.MustCompile(`(?m)^ROTATE BY\s+\d{4}-`).MatchString(out) || !regexp.MustCompile(`(?m)^STATUS\s+rotation-required$`).MatchString(out) {
		t.Fatalf("force-rotate:\n%s", out)
	}
	out, _ = ok(t, admin, "keys", "expiring", "--within", "3h")
	if !regexp.MustCompile(`(?m)^` + keyID + `\s+` + tenantID + `\s+agent\s+rotation-required\s+-\s+\d{4}-`).MatchString(out) {
		t.Fatalf("expiring --within 3h:\n%s", out)
	}
	out, _ = ok(t, admin, "keys", "expiring", "--within", "1h")
	if strings.Contains(out, keyID) {
		t.Fatalf("expiring --within 1h lists a key due in 2h:\n%s", out)
	}
	if _, errOut := fails(t, admin, "keys", "force-rotate", keyID, "--tenant", "acme", "--deadline", "soon"); !strings.Contains(errOut, "body.deadline") {
		t.Fatalf("force-rotate --deadline soon: %q", errOut)
	}
}
