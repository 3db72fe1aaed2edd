package idempotency

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/principal"
)

// Options configure Middleware. TTL, LockTTL and WriteError are required.
type Options struct {
	// TTL is how long a completed response is replayed.
	TTL time.Duration
	// LockTTL is how long an in-flight record turns other attempts away (409) before one with
	// the same fingerprint may take it over. It must outlast any live handler: the HTTP write
	// timeout plus a margin.
	LockTTL time.Duration
	// WriteError renders the middleware's own errors (400, 409, 422, 503) as problems.
	WriteError func(w http.ResponseWriter, r *http.Request, err error)
	// Scope returns a request's scope, and false for a request idempotency does not apply to
	// (one no principal made). Nil: ScopeOf the principal in the request's context.
	Scope func(r *http.Request) (Scope, bool)
	// Logger receives store failures that cannot be answered to the client. Nil: discarded.
	Logger *slog.Logger
	// Now is the clock. Nil: time.Now.
	Now func() time.Time
}

// Middleware returns the HTTP middleware applying Idempotency-Key to POST and PATCH requests (see
// the package doc). It must run inside authentication, where the request's principal is known.
func Middleware(store Store, opts Options) (func(http.Handler) http.Handler, error) {
	switch {
	case store == nil:
		return nil, errors.New("idempotency middleware: a store is required")
	case opts.TTL <= 0:
		return nil, fmt.Errorf("idempotency middleware: TTL must be positive, got %s", opts.TTL)
	case opts.LockTTL <= 0:
		return nil, fmt.Errorf("idempotency middleware: LockTTL must be positive, got %s", opts.LockTTL)
	case opts.WriteError == nil:
		return nil, errors.New("idempotency middleware: WriteError is required")
	}
	if opts.Scope == nil {
		opts.Scope = func(r *http.Request) (Scope, bool) {
			p, ok := principal.FromContext(r.Context())
			if !ok {
				return Scope{}, false
			}
			s, ok := ScopeOf(p)
			return s, ok
		}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	m := &middleware{store: store, opts: opts}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { m.serve(w, r, next) })
	}, nil
}

type middleware struct {
	store Store
	opts  Options
}

func (m *middleware) serve(w http.ResponseWriter, r *http.Request, next http.Handler) {
	values := r.Header.Values(HeaderKey)
	if (r.Method != http.MethodPost && r.Method != http.MethodPatch) || len(values) == 0 {
		next.ServeHTTP(w, r)
		return
	}
	scope, ok := m.opts.Scope(r)
	if !ok {
		next.ServeHTTP(w, r)
		return
	}
	if err := scope.Validate(); err != nil {
		m.opts.WriteError(w, r, errs.Wrap(errs.Internal, err, "the caller cannot be scoped for %s", HeaderKey))
		return
	}
	key, err := ParseKey(values)
	if err != nil {
		m.opts.WriteError(w, r, err)
		return
	}
	body, err := readBody(r)
	if err != nil {
		m.opts.WriteError(w, r, err) // a *http.MaxBytesError maps to 413
		return
	}
	fp := FingerprintRequest(r.Method, r.URL.EscapedPath(), r.URL.RawQuery, body)

	// The attempt goes on if the client disconnects: its outcome is stored for the retry.
	ctx := context.WithoutCancel(r.Context())
	now := m.opts.Now().UTC()
	rec := Record{
		Scope: scope, Key: key, Fingerprint: fp, Token: NewToken(), State: InFlight,
		CreatedAt: now, LockedUntil: now.Add(m.opts.LockTTL), ExpiresAt: now.Add(m.opts.TTL),
	}
	existing, reserved, err := m.store.ReserveIdempotencyKey(ctx, rec, now)
	if err != nil {
		m.opts.WriteError(w, r, unavailable(fmt.Errorf("reserve idempotency key: %w", err)))
		return
	}
	switch {
	case reserved:
		m.run(ctx, w, r, next, rec)
	case existing.State != InFlight && (existing.State != Completed || existing.Response == nil):
		m.opts.WriteError(w, r, errs.New(errs.Internal, "reserve idempotency key: the store returned a record in state %q", existing.State))
	case existing.Fingerprint != fp:
		m.opts.WriteError(w, r, errs.New(errs.Unprocessable,
			"this %s was already used with a different request (method, path, query or body); use a new key for a new request", HeaderKey))
	case existing.State == Completed:
		replay(w, *existing.Response)
	default:
		w.Header().Set("Retry-After", "1")
		m.opts.WriteError(w, r, errs.New(errs.Conflict, "a request with this %s is still being processed; retry later", HeaderKey))
	}
}

// run serves the attempt holding rec, then stores its response (or releases rec after a 5xx or a
// panic) and only then writes the response.
func (m *middleware) run(ctx context.Context, w http.ResponseWriter, r *http.Request, next http.Handler, rec Record) {
	before := w.Header().Clone()
	buf := &recorder{header: w.Header().Clone()}
	completed := false
	defer func() {
		if !completed {
			// A panic unwinding through here: let a retry run the request again.
			m.release(ctx, rec)
		}
	}()
	next.ServeHTTP(buf, r.WithContext(ctx))
	resp := buf.response(before)
	completed = true
	if resp.Status >= 500 {
		m.release(ctx, rec)
	} else if err := m.store.CompleteIdempotencyKey(ctx, rec.Scope, rec.Key, rec.Token, resp, m.opts.Now().UTC().Add(m.opts.TTL)); err != nil {
		// The request's effect happened and its response goes to this client anyway. The record
		// stays in flight, turning retries away until its lock expires, rather than being
		// released for an immediate second run.
		m.opts.Logger.ErrorContext(ctx, "store an idempotent response", "tenant", rec.Scope.Tenant, "principal", rec.Scope.Principal, "error", err)
	}
	buf.writeTo(w, before)
}

func (m *middleware) release(ctx context.Context, rec Record) {
	if err := m.store.ReleaseIdempotencyKey(ctx, rec.Scope, rec.Key, rec.Token); err != nil {
		m.opts.Logger.ErrorContext(ctx, "release an idempotency key", "tenant", rec.Scope.Tenant, "principal", rec.Scope.Principal, "error", err)
	}
}

func unavailable(err error) error {
	e := errs.Wrap(errs.Unavailable, err, "idempotency records are unavailable; retry later")
	e.RetryAfter = time.Second
	return e
}

// readBody reads the whole body (already bounded by the perimeter's body limit) and puts it back
// for the handler.
func readBody(r *http.Request) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, err
	}
	_ = r.Body.Close()
	r.Body = io.NopCloser(bytes.NewReader(body))
	return body, nil
}

// replay writes a stored response: its headers over the perimeter's, the marker, its status and
// its body byte for byte.
func replay(w http.ResponseWriter, resp Response) {
	h := w.Header()
	for k, v := range resp.Header {
		h[k] = slices.Clone(v)
	}
	h.Set(HeaderReplayed, "true")
	w.WriteHeader(resp.Status)
	_, _ = w.Write(resp.Body)
}

// notStored are the headers never stored: hop-by-hop headers (RFC 9110 section 7.6.1), cookies
// (meant for the first attempt alone) and the replay marker. Keys are canonical.
var notStored = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Connection": true, "Proxy-Authenticate": true,
	"Proxy-Authorization": true, "Te": true, "Trailer": true, "Transfer-Encoding": true,
	"Upgrade": true, "Set-Cookie": true, HeaderReplayed: true,
}

// recorder buffers a handler's response. It starts with a copy of the perimeter's headers, so a
// handler reads and changes headers as it would on the real writer.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (rc *recorder) Header() http.Header { return rc.header }

func (rc *recorder) WriteHeader(code int) {
	if rc.status == 0 && code >= 200 { // informational responses are not kept
		rc.status = code
	}
}

func (rc *recorder) Write(b []byte) (int, error) {
	if rc.status == 0 {
		rc.status = http.StatusOK
	}
	return rc.body.Write(b)
}

// response returns what is stored: the status, the headers the handler set or changed relative to
// before (the perimeter's), and the body.
func (rc *recorder) response(before http.Header) Response {
	status := rc.status
	if status == 0 {
		status = http.StatusOK // a handler that wrote nothing answers 200, as net/http does
	}
	var h http.Header
	for k, v := range rc.header {
		if notStored[http.CanonicalHeaderKey(k)] || slices.Equal(before[k], v) {
			continue
		}
		if h == nil {
			h = http.Header{}
		}
		h[k] = slices.Clone(v)
	}
	var body []byte
	if rc.body.Len() > 0 {
		body = bytes.Clone(rc.body.Bytes())
	}
	return Response{Status: status, Header: h, Body: body}
}

// writeTo writes the buffered response to w, whose headers are still before: headers the
// handler removed are removed, every other one set as the handler left it.
func (rc *recorder) writeTo(w http.ResponseWriter, before http.Header) {
	h := w.Header()
	for k := range before {
		if _, ok := rc.header[k]; !ok {
			h.Del(k)
		}
	}
	for k, v := range rc.header {
		h[k] = v
	}
	status := rc.status
	if status == 0 {
		status = http.StatusOK
	}
	w.WriteHeader(status)
	_, _ = w.Write(rc.body.Bytes())
}
