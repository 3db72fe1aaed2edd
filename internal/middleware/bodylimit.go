package middleware

import (
	"net/http"

	"github.com/nops-kernel/nops/internal/errs"
)

// BodyLimit caps request bodies at max bytes. A declared Content-Length above max is refused at
// once with errs.TooLarge through onError, without reading the body. Otherwise the body is
// wrapped with http.MaxBytesReader, so a chunked or lying body fails on read with
// *http.MaxBytesError (which handlers map to 413) and the server closes the connection instead of
// draining the rest.
func BodyLimit(max int64, onError ErrorWriter) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ContentLength > max {
				onError(w, r, errs.New(errs.TooLarge, "request body exceeds %d bytes", max))
				return
			}
			if r.Body != nil && r.Body != http.NoBody {
				r.Body = http.MaxBytesReader(w, r.Body, max)
			}
			next.ServeHTTP(w, r)
		})
	}
}
