package middleware

import (
	"context"
	"net/http"
	"strings"

	"github.com/oklog/ulid/v2"
)

// RequestIDHeader carries the request id in both directions.
const RequestIDHeader = "X-Request-ID"

type requestIDKey struct{}

// RequestID gives every request an id: the caller's X-Request-ID when it is 1–128 characters
// of [A-Za-z0-9._:-] (so a proxy's or client's id correlates across systems), otherwise a fresh
// "req_" + ULID. Anything else a client sends is replaced rather than trusted, because the id
// lands in logs, problems and headers. The id is stored in the context and echoed in the
// response header before the inner handler runs, so even a recovered panic carries it.
func RequestID() func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id := r.Header.Get(RequestIDHeader)
			if !validRequestID(id) {
				id = "req_" + strings.ToLower(ulid.Make().String())
			}
			w.Header().Set(RequestIDHeader, id)
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id)))
		})
	}
}

// RequestIDFromContext returns the request id RequestID stored, or "".
func RequestIDFromContext(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

func validRequestID(id string) bool {
	if len(id) == 0 || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.', c == '_', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}
