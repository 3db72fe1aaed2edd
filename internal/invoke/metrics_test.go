package invoke_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/nops-kernel/nops/internal/invoke"
)

// The per-call series keep their labels and counts while their attribute sets are reused from
// call to call: two calls to one agent count 2 on one series each, the in-flight gauge is back
// to 0, and a rejected call (no agent) has a series of its own.
func TestPerCallSeries(t *testing.T) {
	f := &fleet{}
	id, _ := f.add(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true}`))
	}), "")
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	s, _ := newService(t, f, invoke.Config{}, func(d *invoke.Deps) { d.Meter = mp.Meter("test") })
	for range 2 {
		if w := call(t, s, `{"text":"x"}`); w.Code != http.StatusOK {
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
	}
	f.mu.Lock()
	f.agents = nil
	f.mu.Unlock()
	if w := call(t, s, `{"text":"x"}`); w.Code != http.StatusNotFound {
		t.Fatalf("status %d without agents, want 404", w.Code)
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if sum, ok := m.Data.(metricdata.Sum[int64]); ok {
				for _, dp := range sum.DataPoints {
					if got[m.Name] == nil {
						got[m.Name] = map[string]int64{}
					}
					got[m.Name][dp.Attributes.Encoded(attribute.DefaultEncoder())] += dp.Value
				}
			}
		}
	}
	series := func(kvs ...attribute.KeyValue) string {
		set := attribute.NewSet(kvs...)
		return set.Encoded(attribute.DefaultEncoder())
	}
	tenant, capability := attribute.String("tenant", tenantID), attribute.String("capability", "text.summarize")
	want := map[string]map[string]int64{
		"nops_invoke_requests_total": {
			series(tenant, capability, attribute.String("agent", id), attribute.String("outcome", invoke.OutcomeOK)):       2,
			series(tenant, capability, attribute.String("agent", ""), attribute.String("outcome", invoke.OutcomeRejected)): 1,
		},
		"nops_invoke_attempts_total": {
			series(tenant, capability, attribute.String("agent", id), attribute.String("kind", "first")): 2,
		},
		"nops_invoke_in_flight": {
			series(tenant, capability, attribute.String("agent", id)): 0,
		},
	}
	for name, w := range want {
		if diff := cmp.Diff(w, got[name]); diff != "" {
			t.Errorf("%s (-want +got):\n%s", name, diff)
		}
	}
}
