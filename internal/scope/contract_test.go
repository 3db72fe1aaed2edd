package scope_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/nops-kernel/nops/internal/scope"
)

// TestDefaultRoutesAreInTheContract: every pattern of the default table is an operation of
// api/kernel.yaml, so that a typo cannot silently leave an operation closed to workloads.
func TestDefaultRoutesAreInTheContract(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "api", "kernel.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var spec struct {
		Paths map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(raw, &spec); err != nil {
		t.Fatal(err)
	}
	ops := map[string]bool{}
	for path, methods := range spec.Paths {
		for m := range methods {
			ops[strings.ToUpper(m)+" "+path] = true
		}
	}
	for _, p := range scope.DefaultRoutes().Patterns() {
		if !ops[p] {
			t.Errorf("%s is not an operation of api/kernel.yaml", p)
		}
	}
}
