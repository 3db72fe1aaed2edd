package httpapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"

	"github.com/nops-kernel/nops/internal/apikey"
	"github.com/nops-kernel/nops/internal/audit"
	"github.com/nops-kernel/nops/internal/control"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/middleware"
	"github.com/nops-kernel/nops/internal/principal"
	"github.com/nops-kernel/nops/internal/rbac"
	"github.com/nops-kernel/nops/internal/tenant"
)

var (
	errInvalidToken      = errors.New("invalid bearer token")
	errInsufficientScope = errors.New("insufficient scope")
)

// Verifier checks bearer tokens; *token.Service implements it.
type Verifier interface {
	Verify(ctx context.Context, raw string) (principal.Principal, error)
}

// KeyVerifier checks API keys; *apikey.Service implements it.
type KeyVerifier interface {
	Verify(ctx context.Context, raw string) (apikey.Key, error)
}

// TenantLookup reads the caller's tenant on every authenticated request; *tenant.Service
// implements it. Cached may answer from memory: a suspension takes effect within the tenant
// service's cache TTL (tenant.MaxCacheTTL at most), at once when made through this process.
type TenantLookup interface {
	Cached(ctx context.Context, id string) (tenant.Tenant, error)
}

// Auditor records refused requests; *control.Control implements it.
type Auditor interface {
	Deny(ctx context.Context, tenantID, action, resource, reason string) error
}

// dispatcher sits between the perimeter middleware and the ServeMux. It answers unknown routes
// (404) and wrong methods (405 with Allow) as problems, records the matched route pattern for
// logs, metrics and traces, and enforces what the spec says of each operation: authentication,
// scopes, the request media type and the request schema. Handlers therefore only see requests
// the contract allows.
type dispatcher struct {
	mux      *http.ServeMux
	ops      map[string]*operation
	verifier Verifier
	keys     KeyVerifier
	usage    apikey.UsageSink
	tenants  TenantLookup
	auditor  Auditor
	agents   AgentReader
	guards   Guards
	now      func() time.Time
	errw     errorWriter
}

func (d *dispatcher) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h, pattern := d.mux.Handler(r)
	if pattern == "" {
		middleware.SetRoute(r.Context(), "unmatched")
		d.unmatched(w, r, h)
		return
	}
	middleware.SetRoute(r.Context(), pattern)
	d.mux.ServeHTTP(w, r)
}

// admission wraps the handler of every route: it runs inside the ServeMux, where r.Pattern and
// the path values are set, and admits only requests the operation's contract allows.
func (d *dispatcher) admission(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		op, ok := d.ops[r.Pattern]
		if !ok {
			d.errw.Write(w, r, errs.New(errs.Internal, "route %s is not in the API contract", r.Pattern))
			return
		}
		if !op.secured && viaGateway(r.Context()) && !gatewayPublic(r.URL.Path) {
			d.errw.Write(w, r, errs.New(errs.Forbidden, "the agent gateway serves signed calls of tenants' agents only: use the API listener for %s", r.URL.Path))
			return
		}
		if !op.secured {
			if err := mtlsUnsecured(r); err != nil {
				d.errw.Write(w, r, err)
				return
			}
		}
		r, err := d.admit(w.Header(), r, op)
		if err != nil {
			d.errw.Write(w, r, settled(r, err)) // a signature's nonce claim answers first (guard.go)
			return
		}
		if p, ok := principal.FromContext(r.Context()); ok && op.secured {
			var release func()
			r, release, err = d.guard(w, r, p)
			if err != nil {
				d.errw.Write(w, r, settled(r, err))
				return
			}
			defer release()
		}
		d.serveClaimed(w, r, next)
	})
}

// unmatched answers a request no pattern matched. The mux's own handler decides between 404 and
// 405 and computes Allow; its status and headers are kept, its plain-text body replaced.
func (d *dispatcher) unmatched(w http.ResponseWriter, r *http.Request, h http.Handler) {
	rec := &statusRecorder{header: http.Header{}}
	h.ServeHTTP(rec, r)
	switch rec.status {
	case http.StatusMethodNotAllowed:
		w.Header().Set("Allow", rec.header.Get("Allow"))
		d.errw.Write(w, r, errs.New(errs.MethodNotAllowed, "method %s is not allowed on %s", r.Method, r.URL.Path))
	case http.StatusNotFound:
		d.errw.Write(w, r, errs.New(errs.NotFound, "no route for %s", r.URL.Path))
	default: // a redirect to the cleaned path: let the mux answer it
		d.mux.ServeHTTP(w, r)
	}
}

// admit authenticates, authorises and validates a request for op. It returns the request to
// serve: carrying the principal and what the audit trail records of the request, with the body
// the validator read put back. Presented credentials that fail, suspended tenants and missing
// scopes are recorded in the audit trail. out is the response's header, for what authentication
// tells the caller (HeaderAPIKeyRotateBy).
func (d *dispatcher) admit(out http.Header, r *http.Request, op *operation) (*http.Request, error) {
	ctx, err := d.requestInfo(r)
	if err != nil {
		return r, err
	}
	r = r.WithContext(ctx)
	if op.secured {
		resource := r.Method + " " + r.URL.Path
		p, workload, err := d.credentials(ctx, out, r)
		if err != nil {
			if errors.Is(err, errInvalidToken) {
				d.audit(ctx, "", control.ActionAuthenticate, resource, "invalid credential")
			}
			return r, err
		}
		ctx = principal.NewContext(ctx, p)
		r = r.WithContext(ctx)
		if p.Tenant != "" {
			t, err := d.tenants.Cached(ctx, p.Tenant)
			if err != nil && !errs.Is(err, errs.NotFound) {
				return r, fmt.Errorf("tenant of the caller: %w", err)
			}
			if err != nil || !t.Active() {
				d.audit(ctx, p.Tenant, control.ActionAuthorize, resource, "tenant suspended or deleted")
				return r, errs.New(errs.Forbidden, "the tenant of this credential is suspended")
			}
		}
		if workload != nil {
			// A workload (mTLS listener) is authorised by its hierarchical scopes, not by roles.
			if err := d.authorizeWorkload(ctx, r, workload); err != nil {
				return r, err
			}
			ctx = context.WithValue(ctx, workloadIDKey{}, workload.w.ID.String())
			r = r.WithContext(ctx)
		} else if dec := rbac.Authorize(p, op.scopes); !dec.Allowed {
			d.audit(ctx, p.Tenant, control.ActionAuthorize, resource, dec.Reason)
			return r, errs.Wrap(errs.Forbidden, fmt.Errorf("%w: %s", errInsufficientScope, dec.Reason), "this operation needs the scopes %s", strings.Join(op.scopes, " "))
		}
		if viaGateway(ctx) {
			if err := d.gatewayAdmit(ctx, r, p); err != nil {
				return r, err
			}
		}
		// The signature covers the request as it arrived: verified before the contract
		// validation below, which may rewrite the body and add default query parameters.
		if ctx, err = d.verifySignature(r, p); err != nil {
			return r, err
		}
		r = r.WithContext(ctx)
	}
	if op.bodyTypes != nil && (r.ContentLength != 0 || r.Header.Get("Content-Type") != "") {
		mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if err != nil || !slices.Contains(op.bodyTypes, mt) {
			return r, errs.New(errs.UnsupportedMediaType, "Content-Type must be %s", strings.Join(op.bodyTypes, " or "))
		}
	}
	in := &openapi3filter.RequestValidationInput{
		Request:    r, // the validator replaces r.Body with what it read, so r stays servable
		PathParams: pathParams(r, op),
		Route:      op.route,
		Options: &openapi3filter.Options{
			MultiError: true,
			// Authentication is done above, against the kernel's keys; the filter only checks shape.
			AuthenticationFunc: func(context.Context, *openapi3filter.AuthenticationInput) error { return nil },
		},
	}
	if err := openapi3filter.ValidateRequest(r.Context(), in); err != nil {
		return r, requestError(err)
	}
	return r, nil
}

// requestInfo reads the body (already bounded by the body limit) to digest it for the audit
// trail, puts it back, and records the client address and request id.
func (d *dispatcher) requestInfo(r *http.Request) (context.Context, error) {
	info := control.Request{RequestID: middleware.RequestIDFromContext(r.Context())}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		if ip, err := netip.ParseAddr(host); err == nil {
			info.IP = ip.Unmap().String()
		}
	}
	if r.Body != nil && r.Body != http.NoBody {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return r.Context(), err // a *http.MaxBytesError maps to 413
		}
		_ = r.Body.Close()
		r.Body = io.NopCloser(bytes.NewReader(body))
		if len(body) > 0 {
			info.Digest = audit.DigestRequest(body)
		}
	}
	return control.WithRequest(r.Context(), info), nil
}

// audit records a refusal; a failure to record is logged, and the request is refused anyway.
func (d *dispatcher) audit(ctx context.Context, tenantID, action, resource, reason string) {
	if err := d.auditor.Deny(ctx, tenantID, action, resource, reason); err != nil {
		d.errw.logger.ErrorContext(ctx, "audit a refused request", "request_id", middleware.RequestIDFromContext(ctx), "error", err)
	}
}

// HeaderAPIKeyRotateBy tells the holder of an API key an administrator required to be rotated
// (POST /v1/admin/api-keys/{key_id}/force-rotate) the deadline, RFC 3339, on every response to a
// request the key authenticated: rotate before it, or the key is refused.
const HeaderAPIKeyRotateBy = "Nops-Api-Key-Rotate-By"

// authenticate accepts a bearer token or an API key (X-API-Key). A request carrying both is
// refused: which one counts would be a guess.
func (d *dispatcher) authenticate(ctx context.Context, out http.Header, r *http.Request) (principal.Principal, error) {
	authz, key := r.Header.Get("Authorization"), r.Header.Get("X-API-Key")
	switch {
	case authz == "" && key == "":
		return principal.Principal{}, errs.New(errs.Unauthenticated, "authentication required: send Authorization: Bearer <token> or X-API-Key")
	case authz != "" && key != "":
		return principal.Principal{}, errs.Wrap(errs.Unauthenticated, errInvalidToken, "send either Authorization or X-API-Key, not both")
	case key != "":
		k, err := d.keys.Verify(ctx, key)
		if err != nil {
			if errs.Is(err, errs.Unauthenticated) {
				return principal.Principal{}, errs.Wrap(errs.Unauthenticated, fmt.Errorf("%w: %w", errInvalidToken, err), "invalid or expired API key")
			}
			return principal.Principal{}, fmt.Errorf("verify api key: %w", err)
		}
		d.usage.Record(k.ID, d.now())
		if !k.RotateBy.IsZero() {
			out.Set(HeaderAPIKeyRotateBy, k.RotateBy.UTC().Format(time.RFC3339))
		}
		return k.Principal(), nil
	}
	scheme, raw, ok := strings.Cut(authz, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(raw) == "" {
		return principal.Principal{}, errs.Wrap(errs.Unauthenticated, errInvalidToken, "invalid or expired token")
	}
	p, err := d.verifier.Verify(ctx, strings.TrimSpace(raw))
	if err != nil {
		return principal.Principal{}, errs.Wrap(errs.Unauthenticated, fmt.Errorf("%w: %w", errInvalidToken, err), "invalid or expired token")
	}
	return p, nil
}

func pathParams(r *http.Request, op *operation) map[string]string {
	params := map[string]string{}
	for _, n := range paramNames(op) {
		params[n] = r.PathValue(n)
	}
	return params
}

// requestError turns the validator's findings into one Invalid error naming each field.
func requestError(err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return errs.Wrap(errs.TooLarge, err, "request body larger than %d bytes", mbe.Limit)
	}
	out := &errs.Error{Code: errs.Invalid, Message: "the request does not match the API contract", Err: err}
	collectFields(err, "", &out.Fields)
	if len(out.Fields) == 0 {
		out.Fields = []errs.FieldError{{Name: "request", Reason: "invalid request"}}
	}
	return out
}

func collectFields(err error, where string, into *[]errs.FieldError) {
	// A type switch, not errors.As: a RequestError unwraps to the MultiError it holds, and
	// looking through it would lose where the error was found.
	switch e := err.(type) {
	case openapi3.MultiError:
		for _, inner := range e {
			collectFields(inner, where, into)
		}
	case *openapi3filter.RequestError:
		switch {
		case e.Parameter != nil:
			where = e.Parameter.In + "." + e.Parameter.Name
		case e.RequestBody != nil:
			where = "body"
		}
		var pe *openapi3filter.ParseError
		switch {
		case e.Err == nil:
			*into = append(*into, errs.FieldError{Name: orRequest(where), Reason: orInvalid(e.Reason)})
		case errors.As(e.Err, &pe):
			*into = append(*into, errs.FieldError{Name: orRequest(where), Reason: "malformed: " + pe.Reason})
		default:
			collectFields(e.Err, where, into)
		}
	case *openapi3.SchemaError:
		if e.SchemaField == "oneOf" {
			if branch := closestBranch(e); branch != nil {
				collectFields(branch, where, into)
				return
			}
		}
		name := where
		if ptr := e.JSONPointer(); len(ptr) > 0 {
			name += "." + strings.Join(ptr, ".")
		}
		// Reason never quotes the offending value, so it is safe to return.
		*into = append(*into, errs.FieldError{Name: orRequest(name), Reason: e.Reason})
	default:
		*into = append(*into, errs.FieldError{Name: orRequest(where), Reason: "invalid"})
	}
}

// closestBranch explains a value that matched no branch of a oneOf by the branch it came
// closest to (fewest violations): {"username": "x"} is a password login missing its password,
// not "matches no schema".
func closestBranch(e *openapi3.SchemaError) error {
	var best error
	bestCount := -1
	for _, ref := range e.Schema.OneOf {
		if ref.Value == nil {
			continue
		}
		err := ref.Value.VisitJSON(e.Value, openapi3.MultiErrors())
		if err == nil {
			return nil // it matches one branch: the oneOf failed on ambiguity, say so as is
		}
		n := 1
		var multi openapi3.MultiError
		if errors.As(err, &multi) {
			n = len(multi)
		}
		if bestCount < 0 || n < bestCount {
			best, bestCount = err, n
		}
	}
	return best
}

func orRequest(name string) string {
	if name == "" {
		return "request"
	}
	return name
}

func orInvalid(reason string) string {
	if reason == "" {
		return "invalid"
	}
	return reason
}

// statusRecorder captures the status and headers of the mux's fallback handler; the body is dropped.
type statusRecorder struct {
	header http.Header
	status int
}

func (s *statusRecorder) Header() http.Header { return s.header }
func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
}
func (s *statusRecorder) Write(b []byte) (int, error) {
	s.WriteHeader(http.StatusOK)
	return len(b), nil
}
