package redisbus

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/bus/bustest"
	"github.com/nops-kernel/nops/internal/redisconn"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// client opens a Redis client on url the way the kernel does, closed when the test ends.
func client(t *testing.T, url string) *redis.Client {
	t.Helper()
	c, err := redisconn.Open(ctxT(t), redisconn.Config{URL: url})
	if err != nil {
		t.Fatalf("redisconn.Open: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// testBus opens a bus on a fresh namespace of the shared Redis; change adjusts the Config.
func testBus(t *testing.T, change func(*Config)) (*Bus, redis.UniversalClient) {
	t.Helper()
	c := client(t, services.RedisURL(t))
	ns := bustest.Namespace(t)
	services.CleanupRedisNamespace(t, services.RedisURL(t), ns)
	cfg := Config{Client: c, Namespace: ns, Logger: testLogger(t)}
	if change != nil {
		change(&cfg)
	}
	return openBus(t, cfg), c
}

func openBus(t *testing.T, cfg Config) *Bus {
	t.Helper()
	b, err := Open(ctxT(t), cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

// msg is a valid message with id.
func msg(id string) bus.Message {
	return bus.Message{ID: id, Tenant: "ten_a", Type: "nops.test.alpha.v1", Payload: []byte(`{"id":"` + id + `"}`)}
}

// subscribe subscribes h and stops the subscription when the test ends.
func subscribe(t *testing.T, b *Bus, cfg bus.ConsumerConfig, h bus.Handler) bus.Subscription {
	t.Helper()
	sub, err := b.Subscribe(context.Background(), cfg, h)
	if err != nil {
		t.Fatalf("Subscribe(%s): %v", cfg.Name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := sub.Stop(ctx); err != nil {
			t.Errorf("Stop(%s): %v", cfg.Name, err)
		}
	})
	return sub
}

// eventually polls cond every few milliseconds until it holds, failing the test after 30 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		select {
		case <-t.Context().Done():
			t.Fatalf("test ended while waiting for %s", what)
		case <-time.After(5 * time.Millisecond):
		}
	}
}
