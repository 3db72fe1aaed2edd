package ratelimit_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/goleak"

	"github.com/nops-kernel/nops/internal/ratelimit"
	"github.com/nops-kernel/nops/internal/redisconn"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

// The tests run block auditors in goroutines of their own: goleak makes sure each returns.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a settable test clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2026, 3, 14, 15, 9, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// redisNS returns a client on the shared Redis and a key prefix of the test's own, whose keys
// are deleted when the test ends.
func redisNS(t testing.TB) (*redis.Client, string) {
	t.Helper()
	url, ns := services.RedisNamespace(t)
	return openRedis(t, url), ns + ":rl:"
}

func openRedis(t testing.TB, url string) *redis.Client {
	t.Helper()
	c, err := redisconn.Open(context.Background(), redisconn.Config{URL: url})
	if err != nil {
		t.Fatalf("open redis: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// recorder is a ratelimit.Recorder keeping every call.
type recorder struct {
	mu    sync.Mutex
	calls []recorded
}

type recorded struct{ tenant, key, rule, reason string }

func (r *recorder) RecordBlock(_ context.Context, tenant, key, rule, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, recorded{tenant, key, rule, reason})
}

func (r *recorder) snapshot() []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recorded(nil), r.calls...)
}

// waitCalls polls until the recorder holds n calls, or fails after a deadline.
func (r *recorder) waitCalls(t *testing.T, n int) []recorded {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := r.snapshot()
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// runLimiter starts l's auditor and stops it when the test ends.
func runLimiter(t *testing.T, l *ratelimit.Limiter) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- l.Run(context.Background()) }()
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func newLimiter(t *testing.T, cfg ratelimit.Config, opts ratelimit.Options) *ratelimit.Limiter {
	t.Helper()
	l, err := ratelimit.New(cfg, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	runLimiter(t, l)
	return l
}

func meter(t *testing.T) (*sdkmetric.MeterProvider, *sdkmetric.ManualReader) {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	return mp, reader
}

// sum returns the total of counter name over the data points whose attributes include attrs.
func sum(t *testing.T, reader *sdkmetric.ManualReader, name string, attrs map[string]string) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(t.Context(), &rm); err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
		points:
			for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
				for k, v := range attrs {
					if got, ok := dp.Attributes.Value(attribute.Key(k)); !ok || got.AsString() != v {
						continue points
					}
				}
				total += dp.Value
			}
		}
	}
	return total
}

// gauge returns the value of gauge name, failing when it has not exactly one point.
func gauge(t *testing.T, reader *sdkmetric.ManualReader, name string) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(t.Context(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				dps := m.Data.(metricdata.Gauge[int64]).DataPoints
				if len(dps) != 1 {
					t.Fatalf("%s has %d points, want 1", name, len(dps))
				}
				return dps[0].Value
			}
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// histCount returns how many values histogram name recorded over the data points whose
// attributes include attrs.
func histCount(t *testing.T, reader *sdkmetric.ManualReader, name string, attrs map[string]string) uint64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(t.Context(), &rm); err != nil {
		t.Fatal(err)
	}
	var total uint64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
		points:
			for _, dp := range m.Data.(metricdata.Histogram[float64]).DataPoints {
				for k, v := range attrs {
					if got, ok := dp.Attributes.Value(attribute.Key(k)); !ok || got.AsString() != v {
						continue points
					}
				}
				total += dp.Count
			}
		}
	}
	return total
}
