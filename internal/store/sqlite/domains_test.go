package sqlite

import (
	"testing"

	"github.com/nops-kernel/nops/internal/store/storetest"
)

func openDomains(t *testing.T) storetest.DomainStore { return openMigrated(t, Config{}) }

func TestTenants(t *testing.T) { storetest.RunTenants(t, openDomains) }

func TestAgents(t *testing.T) { storetest.RunAgents(t, openDomains) }

func TestAPIKeys(t *testing.T) { storetest.RunAPIKeys(t, openDomains) }
