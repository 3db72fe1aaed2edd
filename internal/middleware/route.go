package middleware

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
)

// Unmatched is the route that logs, metrics and spans use for a request no route matched.
const Unmatched = "unmatched"

// routeHolder is filled in by the dispatcher and read by the middleware around it.
//
// Why a holder: the matched route pattern is known only deep inside, in the API dispatcher. Every
// middleware that adds to the context clones the request (r.WithContext), so r.Pattern set by
// http.ServeMux on the innermost request is invisible to the outer middleware that log, measure
// and name spans after the handler returns. A pointer placed in the context by an outer
// middleware is shared by all those clones, so a write at the bottom is seen at the top.
//
// The holder also carries the response writer observeOnce made for the request and its state,
// set and read only by the middleware on the request's own goroutine before the handler runs.
type routeHolder struct {
	route atomic.Pointer[string] // atomic: a handler may set it from a goroutine of its own

	observed      http.ResponseWriter
	observedState *responseState
}

type routeHolderKey struct{}

// WithRouteHolder puts an empty route holder in the request context. Install it outside every
// middleware that reads the route (Tracing, Metrics, Logging, Recover).
func WithRouteHolder() func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), routeHolderKey{}, new(routeHolder))))
		})
	}
}

// SetRoute records the matched route pattern. A ServeMux pattern such as
// "GET example.com/v1/agents/{id}" is reduced to its path template "/v1/agents/{id}", the form
// OpenTelemetry's http.route expects; the method is reported separately. Without a holder in ctx
// it does nothing.
func SetRoute(ctx context.Context, pattern string) {
	h, _ := ctx.Value(routeHolderKey{}).(*routeHolder)
	if h == nil {
		return
	}
	route := routeTemplate(pattern)
	h.route.Store(&route)
}

// RouteFromContext returns the route recorded by SetRoute, or "" when none was (callers then
// report Unmatched).
func RouteFromContext(ctx context.Context) string {
	h, _ := ctx.Value(routeHolderKey{}).(*routeHolder)
	if h == nil {
		return ""
	}
	if p := h.route.Load(); p != nil {
		return *p
	}
	return ""
}

// routeOrUnmatched returns the route of r, or Unmatched.
func routeOrUnmatched(r *http.Request) string {
	if route := RouteFromContext(r.Context()); route != "" {
		return route
	}
	return Unmatched
}

// routeTemplate strips the method and host of a ServeMux pattern ("[METHOD ][HOST]/[PATH]").
func routeTemplate(pattern string) string {
	pattern = strings.TrimSpace(pattern)
	if i := strings.IndexAny(pattern, " \t"); i >= 0 {
		pattern = strings.TrimLeft(pattern[i:], " \t")
	}
	if i := strings.IndexByte(pattern, '/'); i > 0 {
		pattern = pattern[i:]
	}
	return pattern
}
