package telemetry_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/nops-kernel/nops/internal/telemetry"
)

// noExporter makes the test independent of OTEL_* variables set in the environment.
func noExporter(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
}

func setup(t *testing.T, opts telemetry.Options) *telemetry.Telemetry {
	t.Helper()
	tel, err := telemetry.Setup(context.Background(), opts)
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	return tel
}

func scrape(t *testing.T, tel *telemetry.Telemetry) string {
	t.Helper()
	rec := httptest.NewRecorder()
	tel.MetricsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics = %d: %s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}

// sample returns the value of the first sample line of family whose labels contain all of
// labels, or "" when there is none.
func sample(exposition, family string, labels ...string) string {
	for line := range strings.Lines(exposition) {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, family+"{") && !strings.HasPrefix(line, family+" ") {
			continue
		}
		if slices.ContainsFunc(labels, func(l string) bool { return !strings.Contains(line, l) }) {
			continue
		}
		return line[strings.LastIndexByte(line, ' ')+1:]
	}
	return ""
}

func TestSetupInstancesDoNotCollide(t *testing.T) {
	noExporter(t)
	a := setup(t, telemetry.Options{ServiceName: "kernel-a", Version: "1.2.3", Commit: "abc123"})
	b := setup(t, telemetry.Options{ServiceName: "kernel-b"})

	ctx := context.Background()
	for tel, n := range map[*telemetry.Telemetry]int64{a: 3, b: 5} {
		c, err := tel.MeterProvider().Meter("test").Int64Counter("nops.test.hits")
		if err != nil {
			t.Fatal(err)
		}
		c.Add(ctx, n)
	}

	for _, tc := range []struct {
		name string
		tel  *telemetry.Telemetry
		want map[string]string
	}{
		{"a", a, map[string]string{"hits": "3", "service": "1"}},
		{"b", b, map[string]string{"hits": "5", "service": "1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := scrape(t, tc.tel)
			got := map[string]string{
				"hits":    sample(out, "nops_test_hits_total"),
				"service": sample(out, "target_info", `service_name="kernel-`+tc.name+`"`),
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("metrics mismatch (-want +got):\n%s\n%s", diff, out)
			}
			for _, family := range []string{"go_goroutines", "go_memstats_heap_alloc_bytes", "process_cpu_seconds_total"} {
				if sample(out, family) == "" {
					t.Errorf("runtime metric %s missing", family)
				}
			}
		})
	}
	if out := scrape(t, a); sample(out, "target_info", `service_version="1.2.3"`, `vcs_ref_head_revision="abc123"`) != "1" {
		t.Errorf("target_info lacks version and commit:\n%s", out)
	}

	// Nothing leaked into the process-wide registries.
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "nops_test") || mf.GetName() == "target_info" {
			t.Errorf("metric %s registered on the default registry", mf.GetName())
		}
	}
	if _, ok := otel.GetTracerProvider().(*sdktrace.TracerProvider); ok {
		t.Error("Setup installed a global tracer provider")
	}
}

func TestSetupSamplesEverySpanAndPropagatesW3C(t *testing.T) {
	noExporter(t)
	tel := setup(t, telemetry.Options{})
	_, span := tel.TracerProvider().Tracer("test").Start(context.Background(), "op")
	span.End()
	if sc := span.SpanContext(); !sc.IsValid() || !sc.IsSampled() {
		t.Errorf("span context %+v: want valid and sampled", sc)
	}
	fields := tel.Propagator().Fields()
	slices.Sort(fields)
	if diff := cmp.Diff([]string{"baggage", "traceparent", "tracestate"}, fields); diff != "" {
		t.Errorf("propagator fields (-want +got):\n%s", diff)
	}
}

func TestShutdownIsIdempotent(t *testing.T) {
	noExporter(t)
	tel, err := telemetry.Setup(context.Background(), telemetry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := tel.Shutdown(context.Background()); err != nil {
			t.Errorf("Shutdown #%d: %v", i+1, err)
		}
	}
}

// collector is an OTLP/HTTP receiver that records what it is sent.
type collector struct {
	status int

	mu       sync.Mutex
	paths    []string
	requests []*coltracepb.ExportTraceServiceRequest
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	req := new(coltracepb.ExportTraceServiceRequest)
	if err := proto.Unmarshal(body, req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	c.paths = append(c.paths, r.Method+" "+r.URL.Path)
	c.requests = append(c.requests, req)
	c.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.WriteHeader(c.status)
}

func (c *collector) spanNames() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var names []string
	for _, req := range c.requests {
		for _, rs := range req.GetResourceSpans() {
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					names = append(names, s.GetName())
				}
			}
		}
	}
	return names
}

func TestSetupExportsSpansOverOTLP(t *testing.T) {
	tests := []struct {
		name     string
		env      func(t *testing.T, url string)
		wantPath string
	}{
		{"OTEL_EXPORTER_OTLP_ENDPOINT", func(t *testing.T, url string) {
			t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
			t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
		}, "POST /v1/traces"},
		{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", func(t *testing.T, url string) {
			t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
			t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url+"/custom/traces")
		}, "POST /custom/traces"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			col := &collector{status: http.StatusOK}
			srv := httptest.NewServer(col)
			t.Cleanup(srv.Close)
			tt.env(t, srv.URL)

			tel, err := telemetry.Setup(context.Background(), telemetry.Options{ServiceName: "otlp-test"})
			if err != nil {
				t.Fatal(err)
			}
			_, span := tel.TracerProvider().Tracer("test").Start(context.Background(), "exported-op")
			span.End()
			// Shutdown flushes the batch synchronously: the collector has it when this returns.
			if err := tel.Shutdown(context.Background()); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			col.mu.Lock()
			paths := slices.Clone(col.paths)
			col.mu.Unlock()
			if diff := cmp.Diff([]string{tt.wantPath}, paths); diff != "" {
				t.Errorf("collector requests (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([]string{"exported-op"}, col.spanNames()); diff != "" {
				t.Errorf("exported spans (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSetupLogsExportFailures(t *testing.T) {
	col := &collector{status: http.StatusBadRequest} // not retryable: fails at once
	srv := httptest.NewServer(col)
	t.Cleanup(srv.Close)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")

	var buf bytes.Buffer
	tel, err := telemetry.Setup(context.Background(), telemetry.Options{Logger: slog.New(slog.NewJSONHandler(&buf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	_, span := tel.TracerProvider().Tracer("test").Start(context.Background(), "op")
	span.End()
	_ = tel.Shutdown(context.Background()) // the export error may or may not be returned here
	lines := decodeLines(t, buf.Bytes())
	if len(lines) != 1 || lines[0]["msg"] != "export spans" || lines[0]["level"] != "WARN" || lines[0]["spans"] != float64(1) {
		t.Errorf("log output %s: want one WARN \"export spans\" line for 1 span", buf.Bytes())
	}
}

func TestSetupServiceName(t *testing.T) {
	tests := []struct {
		name, option, env, want string
	}{
		{"default", "", "", "nops-kernel"},
		{"from options", "kernel-x", "", "kernel-x"},
		{"OTEL_SERVICE_NAME wins", "kernel-x", "renamed-by-ops", "renamed-by-ops"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			noExporter(t)
			t.Setenv("OTEL_SERVICE_NAME", tt.env)
			tel := setup(t, telemetry.Options{ServiceName: tt.option})
			if out := scrape(t, tel); sample(out, "target_info", `service_name="`+tt.want+`"`) != "1" {
				t.Errorf("target_info lacks service_name=%q:\n%s", tt.want, out)
			}
		})
	}
}

func TestSetupRejectsMalformedResourceAttributes(t *testing.T) {
	noExporter(t)
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment")
	if tel, err := telemetry.Setup(context.Background(), telemetry.Options{}); err == nil {
		_ = tel.Shutdown(context.Background())
		t.Fatal("Setup accepted OTEL_RESOURCE_ATTRIBUTES without a value")
	}
}
