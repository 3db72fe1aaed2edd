package middleware

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"

	"github.com/nops-kernel/nops/internal/errs"
)

// Recover turns a panic in the inner handler into a logged error and, when nothing has been
// written yet, a plain internal error through onError (no panic value or stack reaches the
// client). The log line carries request_id, route, the panic value and the stack.
//
// http.ErrAbortHandler is re-panicked untouched: it is the documented way to abort a response.
// A panic after the response started is logged and then turned into http.ErrAbortHandler, so the
// server cuts the connection and the client sees a broken response instead of a truncated body
// that looks complete.
func Recover(logger *slog.Logger, onError ErrorWriter) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ow, state := observeOnce(r, w)
			defer func() {
				v := recover()
				if v == nil {
					return
				}
				if err, ok := v.(error); ok && errors.Is(err, http.ErrAbortHandler) {
					panic(v)
				}
				ctx := r.Context()
				logger.ErrorContext(ctx, "panic recovered",
					"request_id", RequestIDFromContext(ctx),
					"route", routeOrUnmatched(r),
					"panic", fmt.Sprint(v),
					"stack", string(debug.Stack()),
					"response_started", state.started(),
				)
				if state.started() {
					panic(http.ErrAbortHandler)
				}
				// Headers describing the body the handler meant to write would be wrong for the
				// error body.
				h := w.Header()
				for _, k := range []string{"Content-Length", "Content-Encoding", "Content-Range", "Content-Type", "ETag", "Last-Modified"} {
					h.Del(k)
				}
				onError(w, r, errs.New(errs.Internal, "internal error"))
			}()
			next.ServeHTTP(ow, r)
		})
	}
}
