// Package telemetry sets up the kernel's observability: a JSON slog logger behind a redaction
// layer, and OpenTelemetry tracing and metrics with a Prometheus endpoint.
//
// Who may import it: the composition root (internal/kernel) and cmd/ build it; any package may
// take the *slog.Logger, trace.TracerProvider or metric.MeterProvider it hands out, through
// constructor parameters. It imports nothing of the project.
//
// Nothing here touches OpenTelemetry's or Prometheus' process-wide globals (otel.SetGlobal*,
// prometheus.DefaultRegisterer): several kernels run side by side in one test process and must
// not see each other's spans or metrics.
//
// Concurrency: every exported value is safe for concurrent use once built. Telemetry.Shutdown may
// be called more than once, from any goroutine.
package telemetry
