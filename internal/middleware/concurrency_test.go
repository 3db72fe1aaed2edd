package middleware_test

import (
	"context"
	"math"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/middleware"
)

// writeProblem is the ErrorWriter of these tests: the status of the code, and Retry-After as
// internal/httpapi writes it (whole seconds, rounded up, on 429 and 503 only).
func writeProblem(w http.ResponseWriter, _ *http.Request, err error) {
	status := map[errs.Code]int{
		errs.RateLimited: http.StatusTooManyRequests,
		errs.Unavailable: http.StatusServiceUnavailable,
		errs.TooLarge:    http.StatusRequestEntityTooLarge,
	}[errs.CodeOf(err)]
	if status == 0 {
		status = http.StatusInternalServerError
	}
	if e := errs.As(err); e != nil && e.RetryAfter > 0 && (status == 429 || status == 503) {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(e.RetryAfter.Seconds()))))
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(`{"code":"` + string(errs.CodeOf(err)) + `"}`))
}

type gateMetrics struct {
	reader *sdkmetric.ManualReader
}

func newGate(t *testing.T, cfg middleware.GateConfig) (*middleware.Gate, *gateMetrics) {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	g, err := middleware.NewGate(cfg, mp)
	if err != nil {
		t.Fatalf("NewGate: %v", err)
	}
	return g, &gateMetrics{reader: reader}
}

// sums returns the data points of an int64 sum as "attr=value,..." → value.
func (m *gateMetrics) sums(t *testing.T, name string) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := m.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, mm := range sm.Metrics {
			if mm.Name != name {
				continue
			}
			for _, dp := range mm.Data.(metricdata.Sum[int64]).DataPoints {
				var k string
				for _, kv := range dp.Attributes.ToSlice() {
					if k != "" {
						k += ","
					}
					k += string(kv.Key) + "=" + kv.Value.AsString()
				}
				out[k] = dp.Value
			}
		}
	}
	return out
}

// acquire admits one request or fails the test.
func acquire(t *testing.T, g *middleware.Gate, key string, class middleware.Criticality) func() {
	t.Helper()
	release, err := g.Acquire(context.Background(), key, class)
	if err != nil {
		t.Fatalf("Acquire(%q, %s) with %d in flight: %v", key, class, g.InFlight(), err)
	}
	return release
}

// refused checks that Acquire refuses with code.
func refused(t *testing.T, g *middleware.Gate, key string, class middleware.Criticality, code errs.Code) {
	t.Helper()
	release, err := g.Acquire(context.Background(), key, class)
	if err == nil {
		release()
		t.Fatalf("Acquire(%q, %s) with %d in flight was admitted, want %s", key, class, g.InFlight(), code)
	}
	e := errs.As(err)
	if e == nil || e.Code != code || e.RetryAfter != g.Config().RetryAfter {
		t.Fatalf("Acquire(%q, %s) = %#v, want %s with Retry-After %s", key, class, err, code, g.Config().RetryAfter)
	}
}

func TestNewGateRefusesBadConfig(t *testing.T) {
	for name, cfg := range map[string]middleware.GateConfig{
		"negative per key":            {PerKey: -1},
		"negative max":                {Max: -1},
		"thresholds without a max":    {BestEffortMax: 3},
		"essential above max":         {Max: 5, EssentialMax: 6},
		"best effort above essential": {Max: 10, EssentialMax: 5, BestEffortMax: 6},
		"negative retry after":        {RetryAfter: -time.Second},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := middleware.NewGate(cfg, nil); err == nil {
				t.Errorf("NewGate(%+v) succeeded", cfg)
			}
		})
	}
}

func TestGateDefaults(t *testing.T) {
	tests := []struct {
		in   middleware.GateConfig
		want middleware.GateConfig
	}{
		{middleware.GateConfig{Name: "ip", Max: 100}, middleware.GateConfig{Name: "ip", Max: 100, EssentialMax: 90, BestEffortMax: 75, RetryAfter: time.Second}},
		{middleware.GateConfig{Max: 1}, middleware.GateConfig{Max: 1, EssentialMax: 1, BestEffortMax: 1, RetryAfter: time.Second}},
		{middleware.GateConfig{PerKey: 3, RetryAfter: 2 * time.Second}, middleware.GateConfig{PerKey: 3, RetryAfter: 2 * time.Second}},
	}
	for _, tt := range tests {
		g, err := middleware.NewGate(tt.in, nil)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tt.want, g.Config()); diff != "" {
			t.Errorf("Config() of %+v (-want +got):\n%s", tt.in, diff)
		}
	}
}

// Load shedding, refusals first: best_effort is refused from the lowest threshold, essential from
// the next, critical only at the hard cap; freed capacity readmits them in the reverse order.
func TestGateShedsByCriticality(t *testing.T) {
	g, m := newGate(t, middleware.GateConfig{Name: "ip", Max: 6, EssentialMax: 4, BestEffortMax: 2})
	var held []func()
	held = append(held, acquire(t, g, "", middleware.BestEffort))
	if g.Saturated() {
		t.Error("Saturated with 1 in flight, best_effort_max 2")
	}
	held = append(held, acquire(t, g, "", middleware.BestEffort))
	if !g.Saturated() {
		t.Error("not Saturated with 2 in flight, best_effort_max 2")
	}
	refused(t, g, "", middleware.BestEffort, errs.Unavailable)
	if g.Shed() != 1 {
		t.Errorf("Shed = %d after one refusal, want 1", g.Shed())
	}
	refused(t, g, "", "bogus", errs.Unavailable) // an unknown class is best_effort
	held = append(held, acquire(t, g, "", middleware.Essential), acquire(t, g, "", middleware.Essential))
	refused(t, g, "", middleware.Essential, errs.Unavailable)
	refused(t, g, "", middleware.BestEffort, errs.Unavailable)
	held = append(held, acquire(t, g, "", middleware.Critical), acquire(t, g, "", middleware.Critical))
	refused(t, g, "", middleware.Critical, errs.Unavailable)
	refused(t, g, "", middleware.Essential, errs.Unavailable)

	if g.Shed() != 6 {
		t.Errorf("Shed = %d after six refusals, want 6", g.Shed())
	}
	want := map[string]int64{"class=best_effort,gate=ip": 3, "class=essential,gate=ip": 2, "class=critical,gate=ip": 1}
	if diff := cmp.Diff(want, m.sums(t, "nops_load_shed_total")); diff != "" {
		t.Errorf("nops_load_shed_total (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]int64{"gate=ip": 6}, m.sums(t, "nops_inflight_requests")); diff != "" {
		t.Errorf("nops_inflight_requests (-want +got):\n%s", diff)
	}

	held[5]() // 5 in flight
	held[5]() // a second release does nothing
	if g.InFlight() != 5 {
		t.Fatalf("in flight %d after a double release, want 5", g.InFlight())
	}
	refused(t, g, "", middleware.Essential, errs.Unavailable)
	held[5] = acquire(t, g, "", middleware.Critical)
	for _, r := range held[2:] {
		r()
	}
	refused(t, g, "", middleware.BestEffort, errs.Unavailable) // 2 in flight: at the best_effort threshold
	held[0]()
	acquire(t, g, "", middleware.BestEffort)()
	held[1]()
	if g.InFlight() != 0 {
		t.Errorf("in flight %d after releasing everything", g.InFlight())
	}
	if diff := cmp.Diff(map[string]int64{"gate=ip": 0}, m.sums(t, "nops_inflight_requests")); diff != "" {
		t.Errorf("nops_inflight_requests (-want +got):\n%s", diff)
	}
}

func TestGatePerKey(t *testing.T) {
	g, m := newGate(t, middleware.GateConfig{Name: "tenant", PerKey: 2, RetryAfter: 3 * time.Second})
	a1, a2 := acquire(t, g, "ten_a", middleware.Essential), acquire(t, g, "ten_a", middleware.BestEffort)
	refused(t, g, "ten_a", middleware.Critical, errs.RateLimited) // the per-key cap binds every class
	b := acquire(t, g, "ten_b", middleware.Essential)
	for range 5 { // no key, no per-key cap
		defer acquire(t, g, "", middleware.Essential)()
	}
	a1()
	a1() // idempotent: must not free a second slot of ten_a
	a3 := acquire(t, g, "ten_a", middleware.Essential)
	refused(t, g, "ten_a", middleware.Essential, errs.RateLimited)
	for _, r := range []func(){a2, a3, b} {
		r()
	}
	// Everything released: each key has its whole allowance again.
	acquire(t, g, "ten_a", middleware.Essential)()
	if diff := cmp.Diff(map[string]int64{"gate=tenant": 2}, m.sums(t, "nops_concurrency_limited_total")); diff != "" {
		t.Errorf("nops_concurrency_limited_total (-want +got):\n%s", diff)
	}
}

// Concurrent acquires never admit more than the caps, whatever the interleaving.
func TestGateUnderContention(t *testing.T) {
	g, _ := newGate(t, middleware.GateConfig{PerKey: 3, Max: 8})
	var mu sync.Mutex
	perKey, total := map[string]int{}, 0
	var wg sync.WaitGroup
	for i := range 16 {
		key := []string{"a", "b", "c", "d"}[i%4]
		wg.Go(func() {
			for range 200 {
				release, err := g.Acquire(context.Background(), key, middleware.Critical)
				if err != nil {
					continue
				}
				mu.Lock()
				perKey[key]++
				total++
				if perKey[key] > 3 || total > 8 {
					t.Errorf("admitted %d for %s, %d in total", perKey[key], key, total)
				}
				perKey[key]--
				total--
				mu.Unlock()
				release()
			}
		})
	}
	wg.Wait()
	if g.InFlight() != 0 {
		t.Errorf("in flight %d at the end", g.InFlight())
	}
}

// blockingHandler holds every request until release is closed, signalling each arrival.
type blockingHandler struct {
	arrived chan middleware.Criticality
	release chan struct{}
}

func (b *blockingHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, _ := middleware.CriticalityFromContext(r.Context())
	b.arrived <- c
	<-b.release
	if r.URL.Query().Get("panic") != "" {
		panic("handler failed")
	}
	w.WriteHeader(http.StatusNoContent)
}

func TestConcurrencyMiddleware(t *testing.T) {
	g, _ := newGate(t, middleware.GateConfig{Name: "ip", PerKey: 2, Max: 3, EssentialMax: 3, BestEffortMax: 1, RetryAfter: 1500 * time.Millisecond})
	bh := &blockingHandler{arrived: make(chan middleware.Criticality, 10), release: make(chan struct{})}
	var logs logBuffer
	h := middleware.Chain(bh,
		middleware.Recover(logs.logger(), writeProblem),
		middleware.Concurrency(g, middleware.ConcurrencyOptions{
			Class: func(r *http.Request) middleware.Criticality {
				return middleware.Criticality(r.URL.Query().Get("class"))
			},
		}, writeProblem))

	serve := func(remote, query string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, "/?"+query, nil)
		req.RemoteAddr = remote
		req.Header.Set("X-Forwarded-For", "203.0.113.99") // ignored: the key is the peer
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	var wg sync.WaitGroup
	results := make(chan int, 10)
	start := func(remote, query string) {
		wg.Go(func() { results <- serve(remote, query).Code })
		<-bh.arrived
	}
	start("192.0.2.1:1000", "class=essential")
	start("192.0.2.1:1001", "class=critical&panic=1")

	refusals := []struct {
		name, remote, query string
		wantStatus          int
	}{
		{"third request of one IP", "192.0.2.1:1002", "class=critical", http.StatusTooManyRequests},
		{"best_effort above its threshold", "192.0.2.2:1000", "class=best_effort", http.StatusServiceUnavailable},
		{"unclassified counts as best_effort", "192.0.2.2:1000", "", http.StatusServiceUnavailable},
	}
	for _, tt := range refusals {
		rec := serve(tt.remote, tt.query)
		if rec.Code != tt.wantStatus || rec.Header().Get("Retry-After") != "2" {
			t.Errorf("%s: status %d Retry-After %q, want %d and 2", tt.name, rec.Code, rec.Header().Get("Retry-After"), tt.wantStatus)
		}
	}
	start("192.0.2.2:1000", "class=essential")
	if rec := serve("192.0.2.3:1000", "class=critical"); rec.Code != http.StatusServiceUnavailable {
		t.Errorf("critical at the hard cap: status %d, want 503", rec.Code)
	}

	close(bh.release)
	wg.Wait()
	close(results)
	codes := map[int]int{}
	for c := range results {
		codes[c]++
	}
	if diff := cmp.Diff(map[int]int{http.StatusNoContent: 2, http.StatusInternalServerError: 1}, codes); diff != "" {
		t.Errorf("admitted requests' statuses (-want +got):\n%s", diff)
	}
	// The panicking request released its slot too.
	if g.InFlight() != 0 {
		t.Fatalf("in flight %d after every request ended, want 0", g.InFlight())
	}
	bh.release = make(chan struct{})
	close(bh.release)
	for range 2 {
		wg.Go(func() {
			if rec := serve("192.0.2.1:1003", "class=critical"); rec.Code != http.StatusNoContent {
				t.Errorf("after the release: status %d, want 204", rec.Code)
			}
		})
		if c := <-bh.arrived; c != middleware.Critical {
			t.Errorf("criticality in context %q, want critical", c)
		}
	}
	wg.Wait()
}

func TestConcurrencyDefaultClassIsEssential(t *testing.T) {
	g, m := newGate(t, middleware.GateConfig{Name: "ip", Max: 2, EssentialMax: 1, BestEffortMax: 1})
	hold := acquire(t, g, "", middleware.Critical)
	defer hold()
	h := middleware.Concurrency(g, middleware.ConcurrencyOptions{}, writeProblem)(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		t.Error("handler called")
	}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("status %d, want 503", rec.Code)
	}
	if diff := cmp.Diff(map[string]int64{"class=essential,gate=ip": 1}, m.sums(t, "nops_load_shed_total")); diff != "" {
		t.Errorf("nops_load_shed_total (-want +got):\n%s", diff)
	}
}

func TestPeerKey(t *testing.T) {
	tests := map[string]string{
		"192.0.2.1:443":             "192.0.2.1",
		"[2001:db8:1:2:3::4]:443":   "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff::]:1":   "2001:db8:1:2::/64", // same /64, same key
		"[::ffff:192.0.2.1]:1":      "192.0.2.1",
		"[fe80::1%eth0]:1":          "fe80::/64",
		"192.0.2.7":                 "192.0.2.7", // no port
		"@":                         "",          // a unix socket peer
		"not-an-address:80":         "",
		"[2001:db8::1]:notaport:80": "",
	}
	for remote, want := range tests {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = remote
		if got := middleware.PeerKey(r); got != want {
			t.Errorf("PeerKey(%q) = %q, want %q", remote, got, want)
		}
	}
	if got := middleware.AddrKey(netip.MustParseAddr("2001:db8::1")); got != "2001:db8::/64" {
		t.Errorf("AddrKey = %q", got)
	}
}
