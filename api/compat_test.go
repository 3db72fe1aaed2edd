package api_test

import (
	"os"
	"strings"
	"testing"

	"github.com/nops-kernel/nops/api"
	"github.com/nops-kernel/nops/internal/apicompat"
)

// TestNoBreakingChangeSinceBaseline is the API evolution gate: api/kernel.yaml may not break
// clients of the released document (api/baseline/kernel.yaml) unless info.version moves to a new
// major version (a new minor one while it is 0.x). At a release, `make api-baseline` makes the
// current document the baseline.
func TestNoBreakingChangeSinceBaseline(t *testing.T) {
	base, err := os.ReadFile("baseline/kernel.yaml")
	if err != nil {
		t.Fatal(err)
	}
	rep, err := apicompat.Compare(base, api.KernelYAML)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range rep.Warnings {
		t.Logf("possibly breaking: %s", w)
	}
	if rep.Refused() {
		t.Fatalf("api/kernel.yaml (version %s) breaks clients of the baseline (version %s):\n%s\n"+
			"Make the change compatible, or version it: bump info.version to a new major version (minor for 0.x), "+
			"document it in the changelog, and keep the old behaviour available where clients need it (docs/api-evolution.md).",
			rep.Version, rep.BaseVersion, strings.Join(rep.Breaking, "\n"))
	}
}
