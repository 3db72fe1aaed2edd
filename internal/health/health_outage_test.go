package health_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nops-kernel/nops/internal/bus/natsbus"
	"github.com/nops-kernel/nops/internal/health"
	"github.com/nops-kernel/nops/internal/redisconn"
	"github.com/nops-kernel/nops/internal/testutil/faultproxy"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

// TestReadinessFollowsOutage cuts each real dependency with a fault-injecting proxy and requires
// readiness to go down within 5 s and to come back within 5 s of the dependency returning, with
// the same client all along (no restart, no reconnect by hand).
func TestReadinessFollowsOutage(t *testing.T) {
	tests := []struct {
		name string
		// service returns the real service's URL.
		service func(t testing.TB) string
		// connect builds the client for url (which points at the proxy) and returns its probe.
		connect func(t *testing.T, ctx context.Context, url string) func(context.Context) error
	}{
		{
			name:    "postgres",
			service: services.Postgres,
			connect: func(t *testing.T, ctx context.Context, url string) func(context.Context) error {
				pool, err := pgxpool.New(ctx, url)
				if err != nil {
					t.Fatalf("pgxpool: %v", err)
				}
				t.Cleanup(pool.Close)
				return pool.Ping
			},
		},
		{
			name:    "redis",
			service: services.RedisURL,
			connect: func(t *testing.T, ctx context.Context, url string) func(context.Context) error {
				c, err := redisconn.Open(ctx, redisconn.Config{URL: url})
				if err != nil {
					t.Fatalf("redisconn: %v", err)
				}
				t.Cleanup(func() { c.Close() })
				return func(ctx context.Context) error { return redisconn.Ping(ctx, c) }
			},
		},
		{
			name:    "nats",
			service: services.NATSURL,
			connect: func(t *testing.T, ctx context.Context, url string) func(context.Context) error {
				ns := services.UniqueName("t")
				t.Cleanup(func() { services.DeleteNATSStreams(t, services.NATSURL(t), ns) })
				b, err := natsbus.Open(ctx, natsbus.Config{URL: url, Namespace: ns, ConnectTimeout: 5 * time.Second}, testLogger(t))
				if err != nil {
					t.Fatalf("natsbus: %v", err)
				}
				t.Cleanup(func() { b.Close() })
				return b.Ping
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			raw := tt.service(t)
			proxy := faultproxy.New(t, services.HostPort(t, raw))
			probe := tt.connect(t, ctx, services.WithHost(t, raw, proxy.Addr()))
			c := health.New([]health.Check{{Name: tt.name, Probe: probe}}, health.Options{
				TTL:     250 * time.Millisecond,
				Timeout: time.Second,
				Logger:  testLogger(t),
			})

			waitReady(t, c, true, 5*time.Second, "before the outage")
			proxy.Cut()
			waitReady(t, c, false, 5*time.Second, "after Cut")
			proxy.Restore()
			waitReady(t, c, true, 5*time.Second, "after Restore")
		})
	}
}

// waitReady polls c until Ready equals want, failing after within.
func waitReady(t *testing.T, c *health.Checker, want bool, within time.Duration, when string) {
	t.Helper()
	start := time.Now()
	deadline := start.Add(within)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last health.Report
	for {
		last = c.Check(context.Background())
		if last.Ready == want {
			t.Logf("%s: ready=%v after %s", when, want, time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: ready=%v not reached within %s; last report %+v", when, want, within, last)
		}
		<-tick.C
	}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), nil))
}
