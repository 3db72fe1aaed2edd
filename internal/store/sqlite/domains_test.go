package sqlite

import (
	"strings"
	"testing"

	"github.com/nops-kernel/nops/internal/store/storetest"
)

func openDomains(t *testing.T) storetest.DomainStore { return openMigrated(t, Config{}) }

func TestTenants(t *testing.T) { storetest.RunTenants(t, openDomains) }

func TestAgents(t *testing.T) { storetest.RunAgents(t, openDomains) }

func TestAPIKeys(t *testing.T) { storetest.RunAPIKeys(t, openDomains) }

func TestFlags(t *testing.T) {
	storetest.RunFlags(t, func(t *testing.T) storetest.FlagStore { return openMigrated(t, Config{}) })
}

func TestRoutes(t *testing.T) {
	storetest.RunRoutes(t, func(t *testing.T) storetest.RouteStore { return openMigrated(t, Config{}) })
}

// ListRoutes pages through the primary key, without a sort.
func TestRoutesListPlan(t *testing.T) {
	s := openMigrated(t, Config{})
	plan := strings.Join(queryPlan(t, s, listRoutesQuery, "ten_a", "", 10), "\n")
	if !strings.Contains(plan, "USING INDEX sqlite_autoindex_routes_1") || strings.Contains(plan, "TEMP B-TREE") {
		t.Fatalf("plan of ListRoutes:\n%s", plan)
	}
}

func TestToolPins(t *testing.T) {
	storetest.RunToolPins(t, func(t *testing.T) storetest.ToolPinStore { return openMigrated(t, Config{}) })
}
