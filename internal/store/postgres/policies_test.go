package postgres

import (
	"strings"
	"testing"

	"github.com/nops-kernel/nops/internal/store/storetest"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

func TestPolicies(t *testing.T) {
	storetest.RunPolicies(t, func(t *testing.T) storetest.PolicyStore {
		s := openTest(t, Config{URL: services.Postgres(t), MaxConns: 16})
		if err := s.MigrateUp(t.Context()); err != nil {
			t.Fatalf("MigrateUp: %v", err)
		}
		return s
	})
}

// ListPolicies pages through the index policies_tenant, without a sort.
func TestPoliciesListPlan(t *testing.T) {
	s := openTest(t, Config{URL: services.Postgres(t)})
	if err := s.MigrateUp(t.Context()); err != nil {
		t.Fatal(err)
	}
	plan := queryPlan(t, s, listPoliciesQuery, "ten_a", "", 10)
	if !strings.Contains(plan, "policies_tenant") || strings.Contains(plan, "Sort") {
		t.Fatalf("plan of ListPolicies:\n%s", plan)
	}
}
