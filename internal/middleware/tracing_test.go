package middleware_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/nops-kernel/nops/internal/middleware"
)

var w3c = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

func newRecordingProvider(t *testing.T) (*sdktrace.TracerProvider, *tracetest.SpanRecorder) {
	t.Helper()
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp, sr
}

// responseSpanContext extracts the span context the server put in the response headers.
func responseSpanContext(h http.Header) trace.SpanContext {
	return trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), propagation.HeaderCarrier(h)))
}

func attrValue(attrs []attribute.KeyValue, key string) (string, bool) {
	for _, a := range attrs {
		if string(a.Key) == key {
			return a.Value.String(), true
		}
	}
	return "", false
}

func TestTracing(t *testing.T) {
	const incomingTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	const incomingSpan = "00f067aa0ba902b7"
	tests := []struct {
		name        string
		traceparent string
		path        string
		setRoute    string
		wantName    string
		wantRoute   string // "" = no http.route attribute
	}{
		{"continues the incoming trace", "00-" + incomingTrace + "-" + incomingSpan + "-01", "/v1/agents/agt_1", "GET /v1/agents/{id}", "GET /v1/agents/{id}", "/v1/agents/{id}"},
		{"starts a new trace", "", "/v1/agents/agt_1", "/v1/agents/{id}", "GET /v1/agents/{id}", "/v1/agents/{id}"},
		{"unmatched keeps the method", "", "/nowhere", "", "GET", ""},
		{"explicitly unmatched keeps the method", "", "/nowhere", middleware.Unmatched, "GET", ""},
		{"malformed traceparent starts a new trace", "00-zz-yy-01", "/x", "/x", "GET /x", "/x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tp, sr := newRecordingProvider(t)
			var handlerSpan trace.SpanContext
			inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				handlerSpan = trace.SpanContextFromContext(r.Context())
				if tt.setRoute != "" {
					middleware.SetRoute(r.Context(), tt.setRoute)
				}
				w.WriteHeader(http.StatusAccepted)
			})
			h := middleware.Chain(inner, middleware.WithRouteHolder(), middleware.Tracing(tp, w3c))
			req := httptest.NewRequest(http.MethodGet, tt.path, nil)
			if tt.traceparent != "" {
				req.Header.Set("traceparent", tt.traceparent)
			}
			req.Header.Set("baggage", "tenant=ten_1")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)

			spans := sr.Ended()
			if len(spans) != 1 {
				t.Fatalf("recorded %d spans, want 1", len(spans))
			}
			s := spans[0]
			if s.SpanKind() != trace.SpanKindServer {
				t.Errorf("span kind %v, want server", s.SpanKind())
			}
			if s.Name() != tt.wantName {
				t.Errorf("span name %q, want %q", s.Name(), tt.wantName)
			}
			route, ok := attrValue(s.Attributes(), "http.route")
			if (tt.wantRoute == "") == ok || route != tt.wantRoute {
				t.Errorf("http.route = %q (present %v), want %q", route, ok, tt.wantRoute)
			}
			if !handlerSpan.Equal(s.SpanContext()) {
				t.Errorf("handler context holds span %v, want the server span %v", handlerSpan, s.SpanContext())
			}
			if tt.traceparent != "" && tt.name == "continues the incoming trace" {
				if got := s.SpanContext().TraceID().String(); got != incomingTrace {
					t.Errorf("trace id %s, want the incoming %s", got, incomingTrace)
				}
				if got := s.Parent().SpanID().String(); got != incomingSpan || !s.Parent().IsRemote() {
					t.Errorf("parent %s (remote %v), want the incoming remote span %s", got, s.Parent().IsRemote(), incomingSpan)
				}
			} else if s.Parent().IsValid() {
				t.Errorf("span has parent %v, want a new root", s.Parent())
			}
			resp := responseSpanContext(rec.Header())
			if resp.TraceID() != s.SpanContext().TraceID() || resp.SpanID() != s.SpanContext().SpanID() {
				t.Errorf("response traceparent %q, want the server span %v", rec.Header().Get("traceparent"), s.SpanContext())
			}
			if b := rec.Header().Get("baggage"); b != "" {
				t.Errorf("response echoes baggage %q", b)
			}
		})
	}
}

// Without the dispatcher calling SetRoute, a ServeMux directly inside Tracing still names the span.
func TestTracingUsesServeMuxPattern(t *testing.T) {
	tp, sr := newRecordingProvider(t)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/items/{id}", func(http.ResponseWriter, *http.Request) {})
	middleware.Tracing(tp, w3c)(mux).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/v1/items/7", nil))
	if spans := sr.Ended(); len(spans) != 1 || spans[0].Name() != "GET /v1/items/{id}" {
		t.Errorf("spans %v, want one named \"GET /v1/items/{id}\"", spans)
	}
}
