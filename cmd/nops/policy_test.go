package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var policyTestdata = filepath.Join("..", "..", "internal", "policy", "testdata")

// Failures first: a failing case and a policy that does not compile exit non-zero, naming them.
func TestPolicyTestFails(t *testing.T) {
	t.Run("failing case", func(t *testing.T) {
		code, out, errOut := runCLI(t, nil, "policy", "test", filepath.Join(policyTestdata, "failing"))
		if code == 0 {
			t.Fatalf("exit 0 with a failing case\n%s", out)
		}
		if !hasRow(out, "FAIL", "deletes are allowed (wrong on purpose)") || !hasRow(out, "PASS", "reads are allowed") {
			t.Errorf("table lacks the cases' rows:\n%s", out)
		}
		for _, want := range []string{
			"FAIL policies.yaml: deletes are allowed (wrong on purpose): expected allow, got deny: denied by policy file:no-deletes",
			"1 passed, 1 failed",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		if !strings.Contains(errOut, "1 of 2 policy test cases failed") {
			t.Errorf("stderr %q", errOut)
		}
	})
	t.Run("policy that does not compile", func(t *testing.T) {
		code, out, errOut := runCLI(t, nil, "policy", "test", filepath.Join(policyTestdata, "broken"))
		if code == 0 || !strings.Contains(errOut, "policies.yaml:misspelt-field: 1:10: undefined field 'rolee'") {
			t.Fatalf("exit %d, want non-zero naming the policy and the compiler's message\n%s%s", code, out, errOut)
		}
		if strings.Contains(out, "never runs") {
			t.Errorf("cases ran although a policy did not compile:\n%s", out)
		}
	})
	t.Run("unreadable directory", func(t *testing.T) {
		code, _, errOut := runCLI(t, nil, "policy", "test", filepath.Join(t.TempDir(), "missing"))
		if code == 0 || !strings.Contains(errOut, "read policy directory") {
			t.Fatalf("exit %d: %s", code, errOut)
		}
	})
	t.Run("no directory", func(t *testing.T) {
		if code, _, _ := runCLI(t, nil, "policy", "test"); code == 0 {
			t.Fatal("exit 0 without a directory")
		}
	})
}

func TestPolicyTestPasses(t *testing.T) {
	code, out, errOut := runCLI(t, nil, "policy", "test", filepath.Join(policyTestdata, "policies"))
	if code != 0 {
		t.Fatalf("exit %d on the example policies\n%s%s", code, out, errOut)
	}
	if strings.Contains(out, "FAIL") || !strings.Contains(out, " passed, 0 failed") ||
		!hasRow(out, "PASS", "an operator cannot invoke refunds") {
		t.Fatalf("output:\n%s", out)
	}

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "p.yaml"), []byte("policies:\n  - {name: p, effect: deny, expression: 'false'}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, _ = runCLI(t, nil, "policy", "test", dir)
	if code != 0 || !strings.Contains(out, "1 policies compiled; no test cases") {
		t.Fatalf("policies without cases: exit %d\n%s", code, out)
	}
}

// hasRow reports whether out holds a table row starting with status that names the case.
func hasRow(out, status, caseName string) bool {
	for line := range strings.Lines(out) {
		if strings.HasPrefix(line, status+" ") && strings.Contains(line, "  "+caseName+"  ") {
			return true
		}
	}
	return false
}
