package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestEgressKeygenSignVerify: the offline allow-list workflow, and its refusals.
func TestEgressKeygenSignVerify(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "ops.key")
	code, vkey, stderr := runCLI(t, nil, "egress", "keygen", "ops", "--out", key)
	if code != 0 || !strings.HasPrefix(vkey, "ops+") {
		t.Fatalf("keygen: %d %q %q", code, vkey, stderr)
	}
	vkey = strings.TrimSpace(vkey)
	if st, err := os.Stat(key); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("signer key file: %v %v", st, err)
	}
	if code, _, stderr := runCLI(t, nil, "egress", "keygen", "ops", "--out", key); code == 0 || !strings.Contains(stderr, "never overwritten") {
		t.Fatalf("keygen over an existing key: %d %q", code, stderr)
	}

	list := filepath.Join(dir, "allow.yaml")
	if err := os.WriteFile(list, []byte("serial: 2\nservices:\n  agents:\n    class: D2\n    allow:\n      - cidr: 10.20.0.0/16\n        ports: [8080]\ntenants:\n  t1:\n    agents: {class: D4}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	signed := filepath.Join(dir, "allow.signed")
	if code, _, stderr := runCLI(t, nil, "egress", "sign", "--key", key, "--out", signed, list); code != 0 {
		t.Fatalf("sign: %d %q", code, stderr)
	}
	code, out, stderr := runCLI(t, nil, "egress", "verify", "--keys", vkey, signed)
	if code != 0 || !strings.Contains(out, "serial 2, signed by ops") || !strings.Contains(out, "10.20.0.0/16:8080") || !strings.Contains(out, "t1") {
		t.Fatalf("verify: %d %q %q", code, out, stderr)
	}
	// The verifier keys may come from the kernel's own variable.
	if code, _, stderr := runCLI(t, map[string]string{"NOPS_EGRESS_ALLOWLIST_KEYS": vkey}, "egress", "verify", signed); code != 0 {
		t.Fatalf("verify with NOPS_EGRESS_ALLOWLIST_KEYS: %d %q", code, stderr)
	}

	// Tampered: refused, exit code not 0, the reason says so.
	raw, _ := os.ReadFile(signed)
	if err := os.WriteFile(signed, []byte(strings.Replace(string(raw), "8080", "8081", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := runCLI(t, nil, "egress", "verify", "--keys", vkey, signed); code == 0 || !strings.Contains(stderr, "changed after it was signed") {
		t.Fatalf("verify of a tampered list: %d %q", code, stderr)
	}
	// An invalid list is not signed.
	if err := os.WriteFile(list, []byte("serial: 1\nservices:\n  agents:\n    class: D7\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := runCLI(t, nil, "egress", "sign", "--key", key, list); code == 0 || !strings.Contains(stderr, "services.agents.class") {
		t.Fatalf("sign of an invalid list: %d %q", code, stderr)
	}
}
