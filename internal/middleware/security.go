package middleware

import (
	"maps"
	"net/http"
	"slices"
)

// securityHeaders apply to every API response (Strict-Transport-Security is HSTS's, on HTTPS
// responses only). The CSP forbids everything because the API
// serves no documents; Cache-Control: no-store because responses carry tokens and tenant data
// that no shared or browser cache may keep.
var securityHeaders = map[string]string{
	"Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
	"X-Content-Type-Options":  "nosniff",
	"X-Frame-Options":         "DENY",
	"Referrer-Policy":         "no-referrer",
	"Cache-Control":           "no-store",
}

// SecurityHeaderValues returns the headers SecurityHeaders sets (a copy: callers may modify it),
// for tests that check them on every route.
func SecurityHeaderValues() map[string]string { return maps.Clone(securityHeaders) }

// SecurityHeaders sets the security headers before calling the inner handler, so they are on
// every response it produces, including errors, 404/405 and recovered panics. A handler may
// still override one deliberately (for example Cache-Control on a cacheable public document).
func SecurityHeaders() func(http.Handler) http.Handler {
	keys := make([]string, 0, len(securityHeaders))
	vals := make([]string, 0, len(securityHeaders))
	for k, v := range securityHeaders {
		keys = append(keys, http.CanonicalHeaderKey(k))
		vals = append(vals, v)
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h := w.Header()
			// One allocation for the five values instead of one per Header.Set. Each field gets
			// its own one-element window of the request's copy, capacity-limited, so a handler's
			// Add or Set on one field never writes into another's.
			own := slices.Clone(vals)
			for i, k := range keys {
				h[k] = own[i : i+1 : i+1]
			}
			next.ServeHTTP(w, r)
		})
	}
}
