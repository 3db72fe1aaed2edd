package sqlite

import (
	"testing"

	"github.com/nops-kernel/nops/internal/store/storetest"
)

func TestRateLimitOverrides(t *testing.T) {
	storetest.RunRateLimitOverrides(t, func(t *testing.T) storetest.RateLimitStore { return openMigrated(t, Config{}) })
}
