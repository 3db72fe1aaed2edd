package postgres

import (
	"testing"

	"github.com/nops-kernel/nops/internal/store/storetest"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

func TestPerimeter(t *testing.T) {
	storetest.RunPerimeter(t, func(t *testing.T) storetest.PerimeterStore {
		s := openTest(t, Config{URL: services.Postgres(t), MaxConns: 16})
		if err := s.MigrateUp(t.Context()); err != nil {
			t.Fatalf("MigrateUp: %v", err)
		}
		return s
	})
}
