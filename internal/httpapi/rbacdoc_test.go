package httpapi

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite docs/rbac.md")

// TestRBACDoc keeps docs/rbac.md equal to the matrix the code enforces.
func TestRBACDoc(t *testing.T) {
	want, err := RBACDoc()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("..", "..", "docs", "rbac.md")
	if *update {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, string(got)); diff != "" {
		t.Fatalf("docs/rbac.md is stale; run go test ./internal/httpapi -run RBACDoc -update\n%s", diff)
	}
}
