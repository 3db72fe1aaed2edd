package middleware

import (
	"net/http"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Tracing starts a server span per request with otelhttp, continuing the caller's trace from the
// incoming W3C traceparent (through prop). otelhttp's own metrics go to a no-op meter provider:
// Metrics records them, by route, and they must not be counted twice.
//
// The span's context is injected into the response headers (traceparent, tracestate) before the
// inner handler runs, so a client can quote the trace of any response, errors included. Only the
// W3C trace context is written back: baggage is the caller's request-scoped data and has no
// business in a response.
//
// When the inner handler returns, the span is named "METHOD route" and given http.route from the
// route holder. A request no route matched (no route set, or Unmatched set explicitly) keeps the
// bare method as its name and gets no http.route, as the OpenTelemetry conventions ask.
//
// tp and prop are required: with nil, otelhttp would fall back to the process-wide globals.
func Tracing(tp trace.TracerProvider, prop propagation.TextMapPropagator) func(http.Handler) http.Handler {
	respProp := propagation.TraceContext{}
	return func(next http.Handler) http.Handler {
		inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctx := r.Context()
			respProp.Inject(ctx, propagation.HeaderCarrier(w.Header()))
			defer func() {
				if route := RouteFromContext(ctx); route != "" && route != Unmatched {
					span := trace.SpanFromContext(ctx)
					span.SetName(spanName(r))
					span.SetAttributes(semconv.HTTPRoute(route))
				}
			}()
			next.ServeHTTP(w, r)
		})
		return otelhttp.NewHandler(inner, "http.server",
			otelhttp.WithTracerProvider(tp),
			otelhttp.WithPropagators(prop),
			otelhttp.WithMeterProvider(noop.NewMeterProvider()),
			// otelhttp renames the span itself when ServeMux set r.Pattern on its request; this
			// keeps both namings identical.
			otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return spanName(r) }),
		)
	}
}

// spanName is "METHOD route" once a route is known, the method alone before.
func spanName(r *http.Request) string {
	method := normalizeMethod(r.Method)
	if method == "_OTHER" {
		method = "HTTP"
	}
	route := RouteFromContext(r.Context())
	if route == "" && r.Pattern != "" {
		route = routeTemplate(r.Pattern)
	}
	if route == "" || route == Unmatched {
		return method
	}
	return method + " " + route
}
