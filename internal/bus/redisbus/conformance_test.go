package redisbus

import (
	"testing"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/bus/bustest"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

// TestConformance runs the bus conformance suite against the shared Redis, each case on its own
// namespace, whose keys are deleted when the case ends.
func TestConformance(t *testing.T) {
	url := services.RedisURL(t)
	bustest.Run(t, func(t *testing.T, ns string) bus.Bus {
		c := client(t, url)
		services.CleanupRedisNamespace(t, services.RedisURL(t), ns)
		b, err := Open(ctxT(t), Config{Client: c, Namespace: ns, Logger: testLogger(t)})
		if err != nil {
			t.Fatalf("Open(%s): %v", ns, err)
		}
		return b
	}, bustest.Features{Persistent: true, DedupWindow: DefaultDedupWindow})
}
