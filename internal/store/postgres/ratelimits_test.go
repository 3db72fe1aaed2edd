package postgres

import (
	"testing"

	"github.com/nops-kernel/nops/internal/store/storetest"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

func TestRateLimitOverrides(t *testing.T) {
	storetest.RunRateLimitOverrides(t, func(t *testing.T) storetest.RateLimitStore {
		s := openTest(t, Config{URL: services.Postgres(t)})
		if err := s.MigrateUp(t.Context()); err != nil {
			t.Fatalf("MigrateUp: %v", err)
		}
		return s
	})
}
