package sqlite

import (
	"testing"

	"github.com/nops-kernel/nops/internal/store/storetest"
)

func TestIdentity(t *testing.T) {
	storetest.RunIdentity(t, func(t *testing.T) storetest.IdentityStore { return openMigrated(t, Config{}) })
}
