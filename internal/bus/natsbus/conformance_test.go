package natsbus

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/bus/bustest"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

var conformanceFeatures = bustest.Features{Persistent: true, DedupWindow: DefaultDedupWindow}

// TestConformanceEmbedded runs the bus conformance suite against the embedded server: one
// server per namespace, whose store directory outlives a Close so reopening sees the data.
func TestConformanceEmbedded(t *testing.T) {
	var mu sync.Mutex
	dirs := map[string]string{}
	bustest.Run(t, func(t *testing.T, ns string) bus.Bus {
		mu.Lock()
		dir, ok := dirs[ns]
		if !ok {
			dir = t.TempDir()
			dirs[ns] = dir
		}
		mu.Unlock()
		return openQuiet(t, Config{StoreDir: dir, Namespace: ns})
	}, conformanceFeatures)
}

// TestConformanceExternal runs the suite against the shared NATS: every namespace has its own
// streams, deleted when the case ends.
func TestConformanceExternal(t *testing.T) {
	url := services.NATSURL(t)
	var mu sync.Mutex
	seen := map[string]bool{}
	bustest.Run(t, func(t *testing.T, ns string) bus.Bus {
		mu.Lock()
		first := !seen[ns]
		seen[ns] = true
		mu.Unlock()
		if first {
			// Registered before the suite's Close, so it runs after it.
			t.Cleanup(func() { services.DeleteNATSStreams(t, url, ns) })
		}
		return openQuiet(t, Config{URL: url, Namespace: ns, Name: "natsbus-conformance"})
	}, conformanceFeatures)
}

// openQuiet opens a bus whose logs go to the test's output only at warning level and above: the
// suite runs dozens of buses at once.
func openQuiet(t *testing.T, cfg Config) *Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := Open(ctx, cfg, warnLogger(t))
	if err != nil {
		t.Fatalf("Open(%s): %v", cfg.Namespace, err)
	}
	t.Cleanup(func() { _ = b.Close() }) // idempotent: whoever closes first reports
	return b
}
