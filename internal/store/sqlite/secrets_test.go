package sqlite

import (
	"testing"

	"github.com/nops-kernel/nops/internal/store/storetest"
)

func TestSecrets(t *testing.T) {
	storetest.RunSecrets(t, func(t *testing.T) storetest.SecretsStore { return openMigrated(t, Config{}) })
}
