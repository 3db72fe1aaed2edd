package postgres

import (
	"strings"
	"testing"

	"github.com/nops-kernel/nops/internal/store/storetest"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

// openDomains opens a migrated store on a fresh database. The pool is large enough for the
// concurrency tests' goroutines to contend on rows, not on connections.
func openDomains(t *testing.T) storetest.DomainStore {
	s := openTest(t, Config{URL: services.Postgres(t), MaxConns: 16})
	if err := s.MigrateUp(t.Context()); err != nil {
		t.Fatalf("MigrateUp: %v", err)
	}
	return s
}

func TestTenants(t *testing.T) { storetest.RunTenants(t, openDomains) }

func TestAgents(t *testing.T) { storetest.RunAgents(t, openDomains) }

func TestAPIKeys(t *testing.T) { storetest.RunAPIKeys(t, openDomains) }

func TestFlags(t *testing.T) {
	storetest.RunFlags(t, func(t *testing.T) storetest.FlagStore { return openDomains(t).(*Store) })
}

func TestRoutes(t *testing.T) {
	storetest.RunRoutes(t, func(t *testing.T) storetest.RouteStore { return openDomains(t).(*Store) })
}

// ListRoutes pages through the primary key, without a sort.
func TestRoutesListPlan(t *testing.T) {
	s := openDomains(t).(*Store)
	plan := queryPlan(t, s, listRoutesQuery, "ten_a", "", 10)
	if !strings.Contains(plan, "routes_pkey") || strings.Contains(plan, "Sort") {
		t.Fatalf("plan of ListRoutes:\n%s", plan)
	}
}

func TestToolPins(t *testing.T) {
	storetest.RunToolPins(t, func(t *testing.T) storetest.ToolPinStore { return openDomains(t).(*Store) })
}
