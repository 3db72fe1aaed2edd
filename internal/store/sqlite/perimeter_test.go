package sqlite

import (
	"testing"

	"github.com/nops-kernel/nops/internal/store/storetest"
)

func TestPerimeter(t *testing.T) {
	storetest.RunPerimeter(t, func(t *testing.T) storetest.PerimeterStore { return openMigrated(t, Config{}) })
}
