// Package embeddedbus opens the kernel's embedded JetStream bus for tests of packages that run on a
// real bus (the relay, the consumers). Only tests import it.
package embeddedbus

import (
	"context"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/bus/natsbus"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

// Open opens a natsbus with an embedded JetStream in a temporary directory, in a namespace
// of its own (prefix followed by random characters), and closes it when the test ends.
func Open(t testing.TB, prefix string) *natsbus.Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := natsbus.Open(ctx, natsbus.Config{StoreDir: t.TempDir(), Namespace: services.UniqueName(prefix)}, nil)
	if err != nil {
		t.Fatalf("open natsbus: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("close natsbus: %v", err)
		}
	})
	return b
}
