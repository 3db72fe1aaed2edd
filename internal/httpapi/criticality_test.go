package httpapi

import (
	"testing"

	"github.com/nops-kernel/nops/internal/degrade"
)

// TestCriticalityMatrixCoversSpec fails when an operation of api/kernel.yaml has no row in the
// criticality matrix (internal/degrade), or a row names no operation: every route must be
// classified before it ships.
func TestCriticalityMatrixCoversSpec(t *testing.T) {
	doc, err := Spec()
	if err != nil {
		t.Fatal(err)
	}
	ops, err := operations(doc)
	if err != nil {
		t.Fatal(err)
	}
	for pattern := range ops {
		if _, ok := degrade.Routes[pattern]; !ok {
			t.Errorf("%s: missing from degrade.Routes (internal/degrade/matrix.go); classify it and run go test ./internal/degrade -run CriticalityDoc -update", pattern)
		}
	}
	for pattern := range degrade.Routes {
		if _, ok := ops[pattern]; !ok {
			t.Errorf("degrade.Routes has %s, which is no operation of the spec", pattern)
		}
	}
}
