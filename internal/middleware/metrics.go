package middleware

import (
	"fmt"
	"net/http"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// meterName is the instrumentation scope of the HTTP server metrics.
const meterName = "github.com/nops-kernel/nops/internal/middleware"

// durationBuckets span 1 ms to 10 s: below 1 ms the kernel cannot do useful work worth telling
// apart, above 10 s the server's write timeout has ended the request anyway.
var durationBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// Metrics records the OpenTelemetry HTTP server metrics: http.server.request.duration (a
// histogram in seconds, so its count is the request count) by http.request.method, http.route
// and http.response.status_code, and http.server.active_requests by http.request.method. Both
// are updated from deferred calls, so a panicking request never leaves the in-flight count
// raised. The route is the pattern from the holder (Unmatched when none), never the raw path,
// which would let clients create unbounded series.
func Metrics(mp metric.MeterProvider) func(http.Handler) http.Handler {
	meter := mp.Meter(meterName)
	duration, err := meter.Float64Histogram("http.server.request.duration",
		metric.WithUnit("s"),
		metric.WithDescription("Duration of HTTP server requests."),
		metric.WithExplicitBucketBoundaries(durationBuckets...),
	)
	if err != nil {
		// Only an invalid instrument name or unit fails, and those are constants: a bug.
		panic(fmt.Sprintf("middleware: create request duration histogram: %v", err))
	}
	active, err := meter.Int64UpDownCounter("http.server.active_requests",
		metric.WithUnit("{request}"),
		metric.WithDescription("Number of HTTP server requests in flight."),
	)
	if err != nil {
		panic(fmt.Sprintf("middleware: create active requests counter: %v", err))
	}
	// The attribute sets, built once per combination: building one sorts and allocates, on
	// every request otherwise. Methods are normalised, routes are the mux's patterns, statuses
	// three digits: the combinations are bounded.
	var sets sync.Map // metricKey → metric.MeasurementOption
	attrs := func(k metricKey) metric.MeasurementOption {
		if o, ok := sets.Load(k); ok {
			return o.(metric.MeasurementOption)
		}
		kvs := []attribute.KeyValue{semconv.HTTPRequestMethodKey.String(k.method)}
		if k.route != "" {
			kvs = append(kvs, semconv.HTTPRoute(k.route), semconv.HTTPResponseStatusCode(k.status))
		}
		o := metric.WithAttributeSet(attribute.NewSet(kvs...))
		sets.Store(k, o)
		return o
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ow, state := observeOnce(r, w)
			start := time.Now()
			ctx := r.Context()
			method := normalizeMethod(r.Method)
			activeAttrs := attrs(metricKey{method: method})
			active.Add(ctx, 1, activeAttrs)
			completed := false
			defer func() {
				active.Add(ctx, -1, activeAttrs)
				status := state.statusOr(http.StatusOK)
				if !completed && !state.started() {
					status = http.StatusInternalServerError
				}
				duration.Record(ctx, time.Since(start).Seconds(), attrs(metricKey{method, routeOrUnmatched(r), status}))
			}()
			next.ServeHTTP(ow, r)
			completed = true
		})
	}
}

// metricKey names an attribute set of Metrics: the method alone (active requests), or with the
// route, never empty then, and the status (durations).
type metricKey struct {
	method, route string
	status        int
}

// normalizeMethod maps methods outside RFC 9110's set (plus PATCH) to "_OTHER", as the
// OpenTelemetry conventions require, so clients cannot invent label values.
func normalizeMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return m
	}
	return "_OTHER"
}
