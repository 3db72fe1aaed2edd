package middleware

import (
	"log/slog"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// Logging writes one line per request when it ends: msg "http request" with request_id,
// trace_id, method (unknown methods as "_OTHER", as in metrics), route (the pattern, never the
// concrete path), status, duration_ms and bytes_out. Query strings, headers, bodies and client addresses are never logged: they carry
// credentials and personal data. 5xx responses log at error level, everything else at info.
//
// The line is written from a deferred call so a request whose panic passes through (one aborted
// with http.ErrAbortHandler) is still logged, with aborted=true.
func Logging(logger *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ow, state := observeOnce(r, w)
			start := time.Now()
			completed := false
			defer func() {
				status := state.statusOr(http.StatusOK)
				if !completed && !state.started() {
					// The server aborts the connection: the client gets no response at all.
					status = http.StatusInternalServerError
				}
				level := slog.LevelInfo
				if status >= 500 || !completed {
					level = slog.LevelError
				}
				ctx := r.Context()
				if !logger.Enabled(ctx, level) {
					// LogAttrs would drop the line too, but only after the attributes (the trace
					// id's hex among them) were built: at a level above info, on every request.
					return
				}
				attrs := make([]slog.Attr, 0, 9)
				attrs = append(attrs, slog.String("request_id", RequestIDFromContext(ctx)))
				if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
					attrs = append(attrs, slog.String("trace_id", sc.TraceID().String()))
				}
				attrs = append(attrs,
					slog.String("method", normalizeMethod(r.Method)),
					slog.String("route", routeOrUnmatched(r)),
					slog.Int("status", status),
					slog.Float64("duration_ms", float64(time.Since(start).Microseconds())/1000),
					slog.Int64("bytes_out", state.bytes),
				)
				if !completed {
					attrs = append(attrs, slog.Bool("aborted", true))
				}
				logger.LogAttrs(ctx, level, "http request", attrs...)
			}()
			next.ServeHTTP(ow, r)
			completed = true
		})
	}
}
