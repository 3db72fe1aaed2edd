package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/otlptranslator"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Options configures Setup. The zero value works; ServiceName defaults to "nops-kernel".
type Options struct {
	ServiceName string
	Version     string
	Commit      string
	// Logger receives export errors. Nil discards them.
	Logger *slog.Logger
	// OTLPClient carries the OTLP/HTTP trace exports: the kernel passes a client over its egress
	// gate (docs/egress.md), so the exporter connects only where the allow-list lets it. Its
	// transport decides TLS: OTEL_EXPORTER_OTLP_CERTIFICATE and the client-certificate variables
	// are not read then. Nil: the exporter's own client.
	OTLPClient *http.Client
}

// Telemetry owns one kernel's tracer provider, meter provider and Prometheus registry.
type Telemetry struct {
	tp      *sdktrace.TracerProvider
	mp      *sdkmetric.MeterProvider
	prop    propagation.TextMapPropagator
	metrics http.Handler

	shutdownOnce sync.Once
	shutdownErr  error
}

// Setup builds the tracing and metrics pipelines.
//
// Every span is sampled unless the caller's traceparent says otherwise (parent-based, always
// on), so logs always have a trace_id to correlate with. Spans leave the process only when
// OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set: the OTLP/HTTP exporter
// then reads the standard OTEL_EXPORTER_OTLP_* variables (headers, timeout, TLS) itself.
//
// Metrics are read by the OpenTelemetry Prometheus exporter registered on a registry private to
// this Telemetry, together with the Go runtime and process collectors; MetricsHandler serves it.
// The resource carries service.name, service.version and the commit, and honours
// OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME, which win over Options so operators can rename.
func Setup(ctx context.Context, opts Options) (*Telemetry, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	name := opts.ServiceName
	if name == "" {
		name = "nops-kernel"
	}
	kvs := []attribute.KeyValue{semconv.ServiceName(name)}
	if opts.Version != "" {
		kvs = append(kvs, semconv.ServiceVersion(opts.Version))
	}
	if opts.Commit != "" {
		kvs = append(kvs, semconv.VCSRefHeadRevision(opts.Commit))
	}
	// Later options override earlier ones: the environment comes last.
	res, err := resource.New(ctx,
		resource.WithSchemaURL(semconv.SchemaURL),
		resource.WithTelemetrySDK(),
		resource.WithAttributes(kvs...),
		resource.WithFromEnv(),
	)
	if err != nil {
		return nil, fmt.Errorf("build telemetry resource: %w", err)
	}

	tpOpts := []sdktrace.TracerProviderOption{
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())),
	}
	if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" {
		var expOpts []otlptracehttp.Option
		if opts.OTLPClient != nil {
			expOpts = append(expOpts, otlptracehttp.WithHTTPClient(opts.OTLPClient))
		}
		exp, err := otlptracehttp.New(ctx, expOpts...)
		if err != nil {
			return nil, fmt.Errorf("create otlp trace exporter: %w", err)
		}
		tpOpts = append(tpOpts, sdktrace.WithBatcher(loggingExporter{SpanExporter: exp, logger: logger}))
	}
	tp := sdktrace.NewTracerProvider(tpOpts...)

	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(
		otelprom.WithRegisterer(reg),
		otelprom.WithoutScopeInfo(), // one kernel, one scope set: otel_scope_* labels are noise
		// Explicit, so metric names (and the alert rules built on them) do not change with the
		// library's default: http.server.request.duration → http_server_request_duration_seconds.
		otelprom.WithTranslationStrategy(otlptranslator.UnderscoreEscapingWithSuffixes),
	)
	if err != nil {
		_ = tp.Shutdown(ctx)
		return nil, fmt.Errorf("create prometheus exporter: %w", err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithResource(res), sdkmetric.WithReader(exp))
	// Runtime metrics come from client_golang's collectors rather than OTel's runtime
	// instrumentation: metrics leave the process only through this registry, and go_goroutines,
	// go_memstats_* and process_* are the names existing dashboards and alerts expect.
	for _, c := range []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil {
			_ = tp.Shutdown(ctx)
			_ = mp.Shutdown(ctx)
			return nil, fmt.Errorf("register runtime collector: %w", err)
		}
	}

	return &Telemetry{
		tp:   tp,
		mp:   mp,
		prop: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
		metrics: promhttp.HandlerFor(reg, promhttp.HandlerOpts{
			ErrorLog:      promLogger{logger},
			ErrorHandling: promhttp.ContinueOnError,
		}),
	}, nil
}

// TracerProvider returns the provider every component takes its tracer from.
func (t *Telemetry) TracerProvider() trace.TracerProvider { return t.tp }

// MeterProvider returns the provider every component takes its meter from.
func (t *Telemetry) MeterProvider() metric.MeterProvider { return t.mp }

// Propagator returns the W3C Trace Context + Baggage propagator.
func (t *Telemetry) Propagator() propagation.TextMapPropagator { return t.prop }

// MetricsHandler serves this Telemetry's metrics in the Prometheus exposition format.
func (t *Telemetry) MetricsHandler() http.Handler { return t.metrics }

// Shutdown flushes pending spans and stops both providers. Later calls return the first result.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	t.shutdownOnce.Do(func() {
		var errList []error
		if err := t.tp.Shutdown(ctx); err != nil {
			errList = append(errList, fmt.Errorf("shutdown tracer provider: %w", err))
		}
		if err := t.mp.Shutdown(ctx); err != nil {
			errList = append(errList, fmt.Errorf("shutdown meter provider: %w", err))
		}
		t.shutdownErr = errors.Join(errList...)
	})
	return t.shutdownErr
}

// loggingExporter logs failed exports through the kernel's logger; without it they would only
// reach OpenTelemetry's process-wide error handler, which we do not own.
type loggingExporter struct {
	sdktrace.SpanExporter
	logger *slog.Logger
}

func (e loggingExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	err := e.SpanExporter.ExportSpans(ctx, spans)
	if err != nil {
		e.logger.WarnContext(ctx, "export spans", "spans", len(spans), "error", err)
	}
	return err
}

// promLogger adapts slog to promhttp's error log.
type promLogger struct{ logger *slog.Logger }

func (l promLogger) Println(v ...any) {
	// Sprintln, not Sprint: Println semantics put spaces between all operands.
	l.logger.Warn("serve metrics", "error", strings.TrimSuffix(fmt.Sprintln(v...), "\n"))
}
