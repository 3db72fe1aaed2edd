package middleware

import (
	"net/http"
	"strconv"
	"time"
)

// HSTS sets Strict-Transport-Security (RFC 6797) on responses to requests that arrived over TLS
// (r.TLS != nil), and removes it from responses to plain-HTTP requests: RFC 6797 §7.2 forbids
// sending it over an insecure transport, where an attacker could inject or strip it anyway. Chain
// it inside SecurityHeaders, so that it has the last word on the header.
//
// maxAge is rounded down to whole seconds; zero or less sends max-age=0, which tells browsers to
// forget the policy (the way to roll it back). includeSubdomains adds includeSubDomains: only set
// it when every subdomain serves HTTPS.
//
// Behind a TLS-terminating proxy r.TLS is nil and no header is sent; the proxy should set it.
func HSTS(maxAge time.Duration, includeSubdomains bool) func(http.Handler) http.Handler {
	secs := int64(maxAge / time.Second)
	if secs < 0 {
		secs = 0
	}
	value := "max-age=" + strconv.FormatInt(secs, 10)
	if includeSubdomains {
		value += "; includeSubDomains"
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.TLS != nil {
				w.Header().Set("Strict-Transport-Security", value)
			} else {
				w.Header().Del("Strict-Transport-Security")
			}
			next.ServeHTTP(w, r)
		})
	}
}
