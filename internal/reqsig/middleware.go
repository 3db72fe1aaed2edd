package reqsig

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
)

// MiddlewareOptions configure Middleware. WriteError is required.
type MiddlewareOptions struct {
	// WriteError renders a refusal (401), a failed lookup or nonce store (503, 500) or an
	// unreadable body (a *http.MaxBytesError: 413) as a problem.
	WriteError func(w http.ResponseWriter, r *http.Request, err error)
	// Required reports whether r must be signed. Nil: every request must. A request that is not
	// required to be signed but carries Signature-Input or Signature is verified all the same:
	// a broken signature is refused, never ignored.
	Required func(r *http.Request) bool
	// Refused, when set, is told of each refusal after WriteError (for the audit trail; use
	// RefusalCode for the reason). It runs on the request path.
	Refused func(r *http.Request, err error)
}

type resultKey struct{}

// NewContext returns ctx carrying a verified signature's result.
func NewContext(ctx context.Context, res Result) context.Context {
	return context.WithValue(ctx, resultKey{}, res)
}

// FromContext returns the result of the request's verified signature, if it had one.
func FromContext(ctx context.Context) (Result, bool) {
	res, ok := ctx.Value(resultKey{}).(Result)
	return res, ok
}

// Middleware verifies the signature of each request (Verify) and passes the Result on in the
// request's context (FromContext). It reads the whole body, which an outer body limit must
// bound, and hands the handler an identical one.
func (v *Verifier) Middleware(opts MiddlewareOptions) (func(http.Handler) http.Handler, error) {
	if opts.WriteError == nil {
		return nil, errors.New("request signature middleware: WriteError is required")
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			signed := len(r.Header.Values("Signature-Input")) > 0 || len(r.Header.Values("Signature")) > 0
			if !signed && opts.Required != nil && !opts.Required(r) {
				next.ServeHTTP(w, r)
				return
			}
			var body []byte
			if r.Body != nil && r.Body != http.NoBody {
				var err error
				if body, err = io.ReadAll(r.Body); err != nil {
					opts.WriteError(w, r, err)
					return
				}
				r.Body = io.NopCloser(bytes.NewReader(body))
			}
			res, err := v.Verify(r.Context(), r, body)
			if err != nil {
				opts.WriteError(w, r, err)
				if opts.Refused != nil && RefusalCode(err) != "" {
					opts.Refused(r, err)
				}
				return
			}
			next.ServeHTTP(w, r.WithContext(NewContext(r.Context(), res)))
		})
	}, nil
}
