package sqlite

import (
	"strings"
	"testing"

	"github.com/nops-kernel/nops/internal/store/storetest"
)

func TestPolicies(t *testing.T) {
	storetest.RunPolicies(t, func(t *testing.T) storetest.PolicyStore { return openMigrated(t, Config{}) })
}

// ListPolicies pages through the index policies_tenant, without a sort.
func TestPoliciesListPlan(t *testing.T) {
	s := openMigrated(t, Config{})
	plan := strings.Join(queryPlan(t, s, listPoliciesQuery, "ten_a", "", 10), "\n")
	if !strings.Contains(plan, "USING INDEX policies_tenant") || strings.Contains(plan, "TEMP B-TREE") {
		t.Fatalf("plan of ListPolicies:\n%s", plan)
	}
}
