package middleware_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/nops-kernel/nops/internal/middleware"
)

func TestLogging(t *testing.T) {
	tests := []struct {
		name    string
		method  string
		handler http.HandlerFunc
		want    map[string]any // without duration_ms
	}{
		{"ok with route", http.MethodGet, func(w http.ResponseWriter, r *http.Request) {
			middleware.SetRoute(r.Context(), "GET /v1/agents/{id}")
			_, _ = io.WriteString(w, "hello")
		}, map[string]any{"level": "INFO", "route": "/v1/agents/{id}", "status": float64(200), "bytes_out": float64(5), "method": "GET"}},
		{"implicit 200", http.MethodGet, func(http.ResponseWriter, *http.Request) {},
			map[string]any{"level": "INFO", "route": "unmatched", "status": float64(200), "bytes_out": float64(0), "method": "GET"}},
		{"client error", http.MethodPost, func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusNotFound)
		}, map[string]any{"level": "INFO", "route": "unmatched", "status": float64(404), "bytes_out": float64(0), "method": "POST"}},
		{"server error", http.MethodDelete, func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, "down")
		}, map[string]any{"level": "ERROR", "route": "unmatched", "status": float64(503), "bytes_out": float64(4), "method": "DELETE"}},
		{"informational then final", http.MethodGet, func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusEarlyHints)
			w.WriteHeader(http.StatusCreated)
		}, map[string]any{"level": "INFO", "route": "unmatched", "status": float64(201), "bytes_out": float64(0), "method": "GET"}},
		{"unknown method", "BREW", func(http.ResponseWriter, *http.Request) {},
			map[string]any{"level": "INFO", "route": "unmatched", "status": float64(200), "bytes_out": float64(0), "method": "_OTHER"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs logBuffer
			h := middleware.Chain(tt.handler, middleware.RequestID(), middleware.WithRouteHolder(), middleware.Logging(logs.logger()))
			req := httptest.NewRequest(tt.method, "/v1/agents/agt_1?api_key=sekrit&email=bob@example.com", nil)
			req.Header.Set("X-Request-ID", "rid-"+strings.ReplaceAll(tt.name, " ", "-"))
			req.Header.Set("Authorization", "Bearer hdr-token")
			req.Header.Set("User-Agent", "agent-ua")
			req.RemoteAddr = "203.0.113.9:4711"
			h.ServeHTTP(httptest.NewRecorder(), req)

			out := logs.String()
			for _, leak := range []string{"sekrit", "bob@example.com", "api_key", "hdr-token", "agent-ua", "203.0.113.9", "agt_1"} {
				if strings.Contains(out, leak) {
					t.Errorf("log contains %q: %s", leak, out)
				}
			}
			lines := logs.lines(t)
			if len(lines) != 1 {
				t.Fatalf("got %d lines, want 1: %s", len(lines), out)
			}
			l := lines[0]
			if d, ok := l["duration_ms"].(float64); !ok || d < 0 {
				t.Errorf("duration_ms = %v, want a non-negative number", l["duration_ms"])
			}
			delete(l, "duration_ms")
			want := map[string]any{"msg": "http request", "request_id": req.Header.Get("X-Request-ID")}
			for k, v := range tt.want {
				want[k] = v
			}
			if diff := cmp.Diff(want, l); diff != "" {
				t.Errorf("log line (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoggingTraceIDAndFlusher(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	ctx, span := tp.Tracer("test").Start(context.Background(), "server")
	defer span.End()

	var logs logBuffer
	h := middleware.Logging(logs.logger())(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		f, ok := w.(http.Flusher)
		if !ok {
			t.Fatal("wrapped writer lost http.Flusher")
		}
		f.Flush()
	}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil).WithContext(ctx))
	if !rec.Flushed {
		t.Error("Flush did not reach the underlying writer")
	}
	lines := logs.lines(t)
	if len(lines) != 1 || lines[0]["trace_id"] != span.SpanContext().TraceID().String() || lines[0]["status"] != float64(200) {
		t.Errorf("log = %s, want trace_id %s and status 200", logs.String(), span.SpanContext().TraceID())
	}
	var noSpan logBuffer
	middleware.Logging(noSpan.logger())(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})).
		ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
	if lines := noSpan.lines(t); len(lines) != 1 || lines[0]["trace_id"] != nil {
		t.Errorf("log without span = %s, want no trace_id", noSpan.String())
	}
}

func TestLoggingAbortedRequest(t *testing.T) {
	var logs logBuffer
	h := middleware.Logging(logs.logger())(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		panic(http.ErrAbortHandler)
	}))
	if v := servePanicking(h, httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil)); v != http.ErrAbortHandler {
		t.Errorf("panic = %v, want it to pass through", v)
	}
	lines := logs.lines(t)
	if len(lines) != 1 || lines[0]["level"] != "ERROR" || lines[0]["status"] != float64(500) || lines[0]["aborted"] != true {
		t.Errorf("log = %s, want one ERROR line with status 500 and aborted", logs.String())
	}
}
