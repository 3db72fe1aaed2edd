package main

import (
	"regexp"
	"strings"
	"testing"

	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
)

// TestFlagsCLI drives `nops flags` against a real kernel: refusals, set, list, get, eval for a
// tenant, delete; and a tenant's credential may evaluate but not write.
func TestFlagsCLI(t *testing.T) {
	k := kerneltest.Start(t)
	dir := t.TempDir()
	base := map[string]string{"NOPS_SERVER": k.URL}
	admin := with(base, "NOPS_TOKEN", k.Token(t, ""))
	ok(t, admin, "tenants", "create", "acme")
	out, _ := ok(t, admin, "keys", "create", "--tenant", "acme", "--name", "ci", "--role", "VIEWER")
	viewer := with(base, "NOPS_API_KEY", secretOf(t, out))

	_, errOut := fails(t, admin, "flags", "set", "checkout", "--type", "variant", "--variants", "classic,fast", "--default", "classic",
		"--rule", "fast:tenant.name ==")
	if !strings.Contains(errOut, "body.rules[0].expression") {
		t.Fatalf("a rule that does not compile: %q", errOut)
	}
	fails(t, admin, "flags", "set", "checkout", "--type", "variant")
	fails(t, admin, "flags", "set", "checkout", "--type", "boolean", "--default", "false", "--rule", "no-colon")
	fails(t, admin, "flags", "set", "checkout", "-f", writeFile(t, dir, "f.json", `{"type":"boolean"}`), "--type", "boolean")

	out, _ = ok(t, admin, "flags", "set", "checkout", "--create", "--type", "variant", "--variants", "classic,fast", "--default", "classic",
		"--enabled", "--rule", `fast:tenant.name == "acme"`)
	if !regexp.MustCompile(`(?m)^RULE 0\s+fast ← tenant.name == "acme"$`).MatchString(out) || !regexp.MustCompile(`(?m)^ETAG\s+"\S+"$`).MatchString(out) {
		t.Fatalf("flags set:\n%s", out)
	}
	fails(t, admin, "flags", "set", "checkout", "--create", "--type", "boolean", "--default", "false")
	out, _ = ok(t, admin, "flags", "list")
	if !regexp.MustCompile(`(?m)^checkout\s+variant\s+true\s+classic\s+1\s+1$`).MatchString(out) {
		t.Fatalf("flags list:\n%s", out)
	}
	out, _ = ok(t, viewer, "flags", "eval", "checkout")
	if !regexp.MustCompile(`(?m)^VARIANT\s+fast$`).MatchString(out) || !regexp.MustCompile(`(?m)^REASON\s+TARGETING_MATCH$`).MatchString(out) {
		t.Fatalf("flags eval as the tenant's viewer:\n%s", out)
	}
	out, _ = ok(t, admin, "flags", "eval", "checkout", "--tenant", "acme", "-o", "json")
	if !strings.Contains(out, `"variant": "fast"`) && !strings.Contains(out, `"variant":"fast"`) {
		t.Fatalf("flags eval --tenant -o json:\n%s", out)
	}
	// A tenant's credential cannot write.
	_, errOut = fails(t, viewer, "flags", "set", "checkout", "--type", "boolean", "--default", "false")
	if !strings.Contains(errOut, "Forbidden") {
		t.Fatalf("flags set as a viewer: %q", errOut)
	}
	fails(t, viewer, "flags", "delete", "checkout")
	_, errOut = fails(t, admin, "flags", "delete", "checkout", "--if-match", `"stale"`)
	if !strings.Contains(errOut, "Precondition Failed") {
		t.Fatalf("delete with a stale ETag: %q", errOut)
	}
	out, _ = ok(t, admin, "flags", "delete", "checkout")
	if !strings.Contains(out, "flag checkout deleted") {
		t.Fatalf("flags delete: %s", out)
	}
	fails(t, admin, "flags", "get", "checkout")
}
