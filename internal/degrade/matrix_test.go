package degrade_test

import (
	"flag"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/degrade"
)

var update = flag.Bool("update", false, "rewrite the generated part of docs/criticality.md")

// TestCriticalityDoc keeps the generated part of docs/criticality.md equal to the matrix the
// code applies.
func TestCriticalityDoc(t *testing.T) {
	path := filepath.Join("..", "..", "docs", "criticality.md")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	begin, end := strings.Index(doc, degrade.DocBegin), strings.Index(doc, degrade.DocEnd)
	if begin < 0 || end < begin {
		t.Fatalf("docs/criticality.md lacks the markers %q ... %q", degrade.DocBegin, degrade.DocEnd)
	}
	got := doc[begin : end+len(degrade.DocEnd)+1]
	want := degrade.MatrixDoc()
	if *update {
		doc = doc[:begin] + want + doc[end+len(degrade.DocEnd)+1:]
		if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		got = want
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("docs/criticality.md is stale; run go test ./internal/degrade -run CriticalityDoc -update\n%s", diff)
	}
}

// TestMatrixRows checks the rows' consistency: reads are never writes, every class is valid.
func TestMatrixRows(t *testing.T) {
	for p, r := range degrade.Routes {
		method, _, _ := strings.Cut(p, " ")
		if !r.Class.Valid() {
			t.Errorf("%s: class %q", p, r.Class)
		}
		if (method == http.MethodGet || method == http.MethodHead) && r.Write {
			t.Errorf("%s: a %s marked as a write", p, method)
		}
		if (method == http.MethodPut || method == http.MethodDelete) && !r.Write {
			t.Errorf("%s: a %s not marked as a write", p, method)
		}
	}
	for name, r := range degrade.Consumers {
		if !r.Class.Valid() {
			t.Errorf("consumer %s: class %q", name, r.Class)
		}
	}
}

func TestMatrixLookup(t *testing.T) {
	m, err := degrade.NewMatrix()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		method, path string
		pattern      string
		class        degrade.Class
		write, known bool
	}{
		{"GET", "/healthz", "GET /healthz", degrade.Critical, false, true},
		{"POST", "/v1/agents/agt_01/heartbeat", "POST /v1/agents/{agent_id}/heartbeat", degrade.Critical, true, true},
		{"POST", "/v1/agents", "POST /v1/agents", degrade.Essential, true, true},
		{"GET", "/v1/agents", "GET /v1/agents", degrade.BestEffort, false, true},
		{"HEAD", "/v1/agents", "GET /v1/agents", degrade.BestEffort, false, true},
		{"POST", "/v1/auth/token", "POST /v1/auth/token", degrade.Essential, false, true},
		{"POST", "/v1/invoke/text.summarize", "POST /v1/invoke/{capability}", degrade.Critical, true, true},
		{"GET", "/v1/nowhere", "", degrade.BestEffort, false, false},
		{"PATCH", "/v1/agents", "", degrade.BestEffort, false, false},
	} {
		r := httptest.NewRequest(tc.method, tc.path, nil)
		pattern, row, known := m.Lookup(r)
		if pattern != tc.pattern || row.Class != tc.class || row.Write != tc.write || known != tc.known {
			t.Errorf("%s %s: (%q, %s, write %v, known %v), want (%q, %s, write %v, known %v)", tc.method, tc.path,
				pattern, row.Class, row.Write, known, tc.pattern, tc.class, tc.write, tc.known)
		}
	}
	for _, tc := range []struct {
		name  string
		class degrade.Class
		ok    bool
	}{
		{"event-stats", degrade.BestEffort, true},
		{"invocations", degrade.Critical, true},
		{"flags-0a1b2c3d", degrade.Essential, true},
		{"somebody-else", "", false},
	} {
		r, ok := degrade.Consumer(tc.name)
		if ok != tc.ok || r.Class != tc.class {
			t.Errorf("Consumer(%q) = %s, %v; want %s, %v", tc.name, r.Class, ok, tc.class, tc.ok)
		}
	}
}
