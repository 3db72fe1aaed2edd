package middleware_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"testing"

	"github.com/google/go-cmp/cmp"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/nops-kernel/nops/internal/middleware"
)

// collect returns the named metric from reader, failing the test if it is absent.
func collect(t *testing.T, reader *sdkmetric.ManualReader, name string) metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				return m
			}
		}
	}
	t.Fatalf("metric %s not collected", name)
	return metricdata.Metrics{}
}

// histogramCounts renders each data point as "method route status" → count.
func histogramCounts(t *testing.T, m metricdata.Metrics) map[string]uint64 {
	t.Helper()
	h, ok := m.Data.(metricdata.Histogram[float64])
	if !ok {
		t.Fatalf("%s is %T, want a float64 histogram", m.Name, m.Data)
	}
	out := map[string]uint64{}
	for _, dp := range h.DataPoints {
		method, _ := dp.Attributes.Value("http.request.method")
		route, _ := dp.Attributes.Value("http.route")
		status, _ := dp.Attributes.Value("http.response.status_code")
		if dp.Attributes.Len() != 3 {
			t.Errorf("data point has attributes %v, want exactly method, route and status", dp.Attributes.ToSlice())
		}
		out[fmt.Sprintf("%s %s %d", method.AsString(), route.AsString(), status.AsInt64())] = dp.Count
	}
	return out
}

// activeByMethod renders the in-flight counter as method → value.
func activeByMethod(t *testing.T, m metricdata.Metrics) map[string]int64 {
	t.Helper()
	s, ok := m.Data.(metricdata.Sum[int64])
	if !ok || s.IsMonotonic {
		t.Fatalf("%s is %T (monotonic %v), want a non-monotonic int64 sum", m.Name, m.Data, s.IsMonotonic)
	}
	out := map[string]int64{}
	for _, dp := range s.DataPoints {
		method, _ := dp.Attributes.Value("http.request.method")
		out[method.AsString()] = dp.Value
	}
	return out
}

func TestMetrics(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })

	var inFlight map[string]int64
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/agents/{id}", func(w http.ResponseWriter, r *http.Request) {
		middleware.SetRoute(r.Context(), "GET /v1/agents/{id}")
		inFlight = activeByMethod(t, collect(t, reader, "http.server.active_requests"))
		if r.URL.Query().Get("fail") != "" {
			w.WriteHeader(http.StatusBadGateway)
		}
	})
	mux.HandleFunc("/panic", func(w http.ResponseWriter, r *http.Request) {
		middleware.SetRoute(r.Context(), "/panic")
		panic(http.ErrAbortHandler)
	})
	h := middleware.Chain(mux, middleware.WithRouteHolder(), middleware.Metrics(mp))

	for _, req := range []struct{ method, target string }{
		{http.MethodGet, "/v1/agents/agt_1"},
		{http.MethodGet, "/v1/agents/agt_2"},
		{http.MethodGet, "/v1/agents/agt_3?fail=1"},
		{"BREW", "/v1/agents/agt_1"},
		{http.MethodGet, "/nowhere"},
	} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(req.method, req.target, nil))
	}
	if diff := cmp.Diff(map[string]int64{"GET": 0, "_OTHER": 1}, inFlight); diff != "" {
		t.Errorf("in-flight during the last routed request (-want +got):\n%s", diff)
	}
	if v := servePanicking(h, httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/panic", nil)); v == nil {
		t.Fatal("handler did not panic")
	}

	want := map[string]uint64{
		"GET /v1/agents/{id} 200":    2,
		"GET /v1/agents/{id} 502":    1,
		"_OTHER /v1/agents/{id} 200": 1,
		"GET unmatched 404":          1,
		"POST /panic 500":            1,
	}
	dur := collect(t, reader, "http.server.request.duration")
	if diff := cmp.Diff(want, histogramCounts(t, dur)); diff != "" {
		t.Errorf("request duration counts (-want +got):\n%s", diff)
	}
	if dur.Unit != "s" {
		t.Errorf("unit = %q, want s", dur.Unit)
	}
	bounds := dur.Data.(metricdata.Histogram[float64]).DataPoints[0].Bounds
	if !sort.Float64sAreSorted(bounds) || bounds[0] != 0.001 || bounds[len(bounds)-1] != 10 {
		t.Errorf("bucket bounds %v, want sorted from 0.001 to 10", bounds)
	}
	if diff := cmp.Diff(map[string]int64{"GET": 0, "_OTHER": 0, "POST": 0},
		activeByMethod(t, collect(t, reader, "http.server.active_requests"))); diff != "" {
		t.Errorf("in-flight after all requests, panics included (-want +got):\n%s", diff)
	}
}
