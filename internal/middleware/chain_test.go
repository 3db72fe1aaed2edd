package middleware_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/middleware"
)

func TestChainOrder(t *testing.T) {
	var calls []string
	mw := func(name string) func(http.Handler) http.Handler {
		return func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				calls = append(calls, name+" in")
				next.ServeHTTP(w, r)
				calls = append(calls, name+" out")
			})
		}
	}
	h := middleware.Chain(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { calls = append(calls, "handler") }),
		mw("a"), mw("b"), mw("c"))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
	want := []string{"a in", "b in", "c in", "handler", "c out", "b out", "a out"}
	if diff := cmp.Diff(want, calls); diff != "" {
		t.Errorf("call order (-want +got):\n%s", diff)
	}
	if got := middleware.Chain(http.NotFoundHandler()); got == nil {
		t.Error("Chain without middleware returned nil")
	}
}

// TestKernelStack chains every middleware in the order the kernel uses and sends a request to a
// dispatcher that panics after matching its route.
func TestKernelStack(t *testing.T) {
	tp, sr := newRecordingProvider(t)
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	var logs logBuffer
	var ew errorRecorder
	logger := logs.logger()

	dispatcher := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		middleware.SetRoute(r.Context(), "POST /v1/agents")
		panic("nil map write in handler")
	})
	h := middleware.Chain(dispatcher,
		middleware.RequestID(),
		middleware.WithRouteHolder(),
		middleware.SecurityHeaders(),
		middleware.Tracing(tp, w3c),
		middleware.Metrics(mp),
		middleware.Logging(logger),
		middleware.Recover(logger, ew.write),
		middleware.BodyLimit(1<<20, ew.write),
	)
	req := httptest.NewRequest(http.MethodPost, "/v1/agents", strings.NewReader(`{"name":"a"}`))
	req.Header.Set("X-Request-ID", "client-req-42")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)

	if rec.Code != http.StatusInternalServerError {
		t.Errorf("status = %d, want 500", rec.Code)
	}
	if got := ew.got(); len(got) != 1 || !errs.Is(got[0], errs.Internal) {
		t.Errorf("ErrorWriter got %v, want one internal error", got)
	}
	if !strings.Contains(rec.Body.String(), `"code":"internal"`) {
		t.Errorf("body %q was not written by the ErrorWriter", rec.Body)
	}
	for k, v := range middleware.SecurityHeaderValues() {
		if got := rec.Header().Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if got := rec.Header().Get("X-Request-ID"); got != "client-req-42" {
		t.Errorf("X-Request-ID = %q, want the client's", got)
	}

	spans := sr.Ended()
	if len(spans) != 1 || spans[0].Name() != "POST /v1/agents" {
		t.Fatalf("spans %v, want one named \"POST /v1/agents\"", spans)
	}
	traceID := spans[0].SpanContext().TraceID().String()
	if !strings.Contains(rec.Header().Get("traceparent"), traceID) {
		t.Errorf("response traceparent %q lacks trace %s", rec.Header().Get("traceparent"), traceID)
	}

	var requestLines []map[string]any
	for _, l := range logs.lines(t) {
		if l["msg"] == "http request" {
			delete(l, "duration_ms")
			requestLines = append(requestLines, l)
		}
	}
	want := []map[string]any{{
		"level": "ERROR", "msg": "http request", "request_id": "client-req-42", "trace_id": traceID,
		"method": "POST", "route": "/v1/agents", "status": float64(500), "bytes_out": float64(len(rec.Body.String())),
	}}
	if diff := cmp.Diff(want, requestLines); diff != "" {
		t.Errorf("request log lines (-want +got):\n%s", diff)
	}

	if diff := cmp.Diff(map[string]uint64{"POST /v1/agents 500": 1},
		histogramCounts(t, collect(t, reader, "http.server.request.duration"))); diff != "" {
		t.Errorf("request metrics (-want +got):\n%s", diff)
	}
}
