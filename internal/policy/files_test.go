package policy_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nops-kernel/nops/internal/policy"
)

// writeDir writes files (name -> content) into a fresh directory.
func writeDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const goodFile = `
policies:
  - name: no-deletes
    effect: deny
    expression: action == "agents.delete"
`

// Loading errors first: a broken file refuses the whole directory, names the file and the
// policy, and leaves the engine as it was.
func TestLoadDirRefuses(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  []string
	}{
		{"policy that does not compile", map[string]string{"a.yaml": `
policies:
  - name: misspelt
    effect: deny
    expression: principal.rolee == "ADMIN"
`}, []string{"a.yaml:misspelt:", "1:10:", "undefined field 'rolee'"}},
		{"policy that is not a bool", map[string]string{"a.yaml": `
policies:
  - name: a-string
    effect: allow
    expression: principal.role
`}, []string{"a.yaml:a-string:", "must be a bool"}},
		{"malformed YAML", map[string]string{"a.yaml": "policies: [\n"}, []string{"a.yaml:", "yaml"}},
		{"unknown key", map[string]string{"a.yaml": `
policies:
  - name: typo
    efect: deny
    expression: "true"
`}, []string{"a.yaml:", "efect"}},
		{"bad effect", map[string]string{"a.yaml": `
policies:
  - name: maybe
    effect: maybe
    expression: "true"
`}, []string{"a.yaml:maybe:", "effect"}},
		{"missing name", map[string]string{"a.yaml": `
policies:
  - effect: deny
    expression: "true"
`}, []string{"a.yaml:policies[0]:", "name: required"}},
		{"stored-policy id", map[string]string{"a.yaml": `
policies:
  - name: sneaky
    id: pol_01jz0000000000000000000000
    effect: deny
    expression: "true"
`}, []string{"a.yaml:sneaky:", `must not start with "pol_"`}},
		{"bad tenant", map[string]string{"a.yaml": `
policies:
  - name: t
    tenant: "ten a"
    effect: deny
    expression: "true"
`}, []string{"a.yaml:t:", "tenant"}},
		{"duplicate id across files", map[string]string{
			"a.yaml": "policies:\n  - {name: one, id: same, effect: deny, expression: 'true'}\n",
			"b.yaml": "policies:\n  - {name: two, id: same, effect: deny, expression: 'true'}\n",
		}, []string{"b.yaml:two:", `id "same" is also used in a.yaml`}},
		{"duplicate name in a tenant", map[string]string{
			"a.yaml": "policies:\n  - {name: one, id: x, effect: deny, expression: 'true'}\n  - {name: one, id: y, effect: allow, expression: 'true'}\n",
		}, []string{"a.yaml:one:", "name is also used"}},
		{"test without expect", map[string]string{"a.yaml": "tests:\n  - {name: t, input: {action: x}}\n"},
			[]string{"a.yaml:t:", "expect must be allow or deny"}},
		{"two documents", map[string]string{"a.yaml": goodFile + "---\n" + goodFile}, []string{"one YAML document"}},
		{"one good and one broken file", map[string]string{"good.yaml": goodFile, "bad.yaml": `
policies:
  - name: broken
    effect: deny
    expression: "action =="
`}, []string{"bad.yaml:broken:", "Syntax error"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEngine(t, policy.Options{}, denyP("before", "", `action == "agents.update"`))
			err := e.LoadDir(writeDir(t, tt.files))
			if err == nil {
				t.Fatal("LoadDir succeeded, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("LoadDir error %q does not contain %q", err, w)
				}
			}
			// The engine keeps the policies it had.
			wantDecision(t, e.Evaluate(t.Context(), in(tenantA)), false, "before", "denied")
		})
	}
	t.Run("missing directory", func(t *testing.T) {
		e := newEngine(t, policy.Options{})
		if err := e.LoadDir(filepath.Join(t.TempDir(), "nope")); err == nil {
			t.Fatal("LoadDir of a missing directory succeeded")
		}
	})
}

func TestLoadDir(t *testing.T) {
	e := newEngine(t, policy.Options{}, denyP("replaced", "", `true`))
	dir := writeDir(t, map[string]string{
		"a.yaml":     goodFile,
		"b.yml":      "policies:\n  - {name: tenant-a-only, tenant: " + tenantA + ", effect: deny, expression: 'action == \"agents.update\"'}\n",
		"notes.txt":  "not a policy file",
		"empty.yaml": "",
	})
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sub", "ignored.yaml"), []byte("policies: [oops"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.LoadDir(dir); err != nil {
		t.Fatalf("LoadDir: %v", err)
	}
	del := in(tenantB)
	del.Action = "agents.delete"
	wantDecision(t, e.Evaluate(t.Context(), del), false, "file:no-deletes", "denied by policy file:no-deletes (no-deletes)")
	wantDecision(t, e.Evaluate(t.Context(), in(tenantA)), false, "file:tenant-a-only", "denied")
	wantDecision(t, e.Evaluate(t.Context(), in(tenantB)), true, "", "no deny policy matched")
}

// The example directory shipped for tenants loads, and every one of its cases passes.
func TestExamplePolicies(t *testing.T) {
	d, err := policy.ReadDir(filepath.Join("testdata", "policies"))
	if err != nil {
		t.Fatalf("ReadDir: %v", err)
	}
	if len(d.Policies) < 5 || len(d.Tests) < 10 {
		t.Fatalf("read %d policies and %d tests, want the examples", len(d.Policies), len(d.Tests))
	}
	e := newEngine(t, policy.Options{})
	if err := e.SetFilePolicies(d.Policies); err != nil {
		t.Fatalf("SetFilePolicies: %v", err)
	}
	for _, r := range policy.RunTests(t.Context(), e, d.Tests) {
		if !r.Pass {
			t.Errorf("%s: %s: %s", r.Case.File, r.Case.Name, r.Problem)
		}
	}
}

func TestRunTestsReportsFailures(t *testing.T) {
	d, err := policy.ReadDir(filepath.Join("testdata", "failing"))
	if err != nil {
		t.Fatal(err)
	}
	e := newEngine(t, policy.Options{})
	if err := e.SetFilePolicies(d.Policies); err != nil {
		t.Fatal(err)
	}
	var failed []string
	for _, r := range policy.RunTests(t.Context(), e, d.Tests) {
		if !r.Pass {
			failed = append(failed, r.Case.Name+": "+r.Problem)
		}
	}
	if len(failed) != 1 || !strings.Contains(failed[0], "deletes are allowed (wrong on purpose): expected allow, got deny") {
		t.Fatalf("failures %q, want the one wrong case", failed)
	}

	// A case naming the wrong deciding policy fails too.
	cases := []policy.TestCase{{Name: "wrong policy", Input: policy.Input{Action: "agents.delete"}, Expect: "deny", Policy: "someone-else"}}
	r := policy.RunTests(t.Context(), e, cases)
	if r[0].Pass || !strings.Contains(r[0].Problem, `expected policy "someone-else"`) {
		t.Fatalf("result %+v, want a failure naming the expected policy", r[0])
	}
}
