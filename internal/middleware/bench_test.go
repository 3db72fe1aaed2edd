package middleware_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/nops-kernel/nops/internal/middleware"
)

// BenchmarkKernelStack runs one small GET through the middleware every request of the kernel
// passes (the order of httpapi.NewHandler, the edge gate included), with an SDK tracer and meter
// as the kernel has, and the request log at info (every line written, as JSON, to io.Discard)
// and at error (the request lines dropped, as in bench/perimeter and bench/invoke). Compare
// allocs/op before and after a change; ns/op only within one run.
//
//	go test -run '^$' -bench KernelStack -benchmem -count 5 ./internal/middleware
func BenchmarkKernelStack(b *testing.B) {
	for _, level := range []slog.Level{slog.LevelInfo, slog.LevelError} {
		b.Run("log="+level.String(), func(b *testing.B) {
			tp := sdktrace.NewTracerProvider()
			b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
			mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
			b.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
			logger := slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: level}))
			var ew errorRecorder
			gate, err := middleware.NewGate(middleware.GateConfig{Name: "edge", PerKey: 1 << 20, Max: 1 << 20}, mp)
			if err != nil {
				b.Fatal(err)
			}
			body := []byte(`{"id":"agt_1","name":"a"}`)
			handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				middleware.SetRoute(r.Context(), "GET /v1/agents/{agent_id}")
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write(body)
			})
			h := middleware.Chain(handler,
				middleware.RequestID(),
				middleware.WithRouteHolder(),
				middleware.SecurityHeaders(),
				middleware.Tracing(tp, w3c),
				middleware.Metrics(mp),
				middleware.Logging(logger),
				middleware.Recover(logger, ew.write),
				middleware.Concurrency(gate, middleware.ConcurrencyOptions{}, ew.write),
				middleware.BodyLimit(1<<20, ew.write),
			)
			req := httptest.NewRequest(http.MethodGet, "/v1/agents/agt_1", nil)
			req.RemoteAddr = "192.0.2.1:1234"
			b.ReportAllocs()
			for b.Loop() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatalf("status %d", rec.Code)
				}
			}
		})
	}
}
