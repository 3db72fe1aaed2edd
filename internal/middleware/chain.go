package middleware

import "net/http"

// ErrorWriter renders err as the response. The HTTP API supplies it (writing RFC 9457 problems);
// middleware calls it with an *errs.Error instead of formatting bodies itself.
type ErrorWriter func(w http.ResponseWriter, r *http.Request, err error)

// Chain wraps h in mws; the first middleware is the outermost, so it sees the request first and
// the response last.
func Chain(h http.Handler, mws ...func(http.Handler) http.Handler) http.Handler {
	for i := len(mws) - 1; i >= 0; i-- {
		h = mws[i](h)
	}
	return h
}
