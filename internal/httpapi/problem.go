package httpapi

import (
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"strconv"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/httpapi/gen"
	"github.com/nops-kernel/nops/internal/middleware"
)

// statusOf is the one mapping from error codes to HTTP statuses.
var statusOf = map[errs.Code]int{
	errs.Invalid:              http.StatusBadRequest,
	errs.Unauthenticated:      http.StatusUnauthorized,
	errs.Forbidden:            http.StatusForbidden,
	errs.NotFound:             http.StatusNotFound,
	errs.MethodNotAllowed:     http.StatusMethodNotAllowed,
	errs.Conflict:             http.StatusConflict,
	errs.PreconditionFailed:   http.StatusPreconditionFailed,
	errs.TooLarge:             http.StatusRequestEntityTooLarge,
	errs.UnsupportedMediaType: http.StatusUnsupportedMediaType,
	errs.Unprocessable:        http.StatusUnprocessableEntity,
	errs.RateLimited:          http.StatusTooManyRequests,
	errs.Unavailable:          http.StatusServiceUnavailable,
	errs.BadGateway:           http.StatusBadGateway,
	errs.GatewayTimeout:       http.StatusGatewayTimeout,
	errs.Internal:             http.StatusInternalServerError,
}

// problemType is the RFC 9457 "type" of a code: a URN, stable across releases.
func problemType(c errs.Code) string { return "urn:nops:problem:" + string(c) }

// errorWriter writes every error of the API as an RFC 9457 problem. Internal details (the cause)
// are logged with the request id and never returned; 5xx responses carry a generic detail.
type errorWriter struct {
	logger *slog.Logger
}

// Write implements middleware.ErrorWriter.
func (ew errorWriter) Write(w http.ResponseWriter, r *http.Request, err error) {
	e := classify(err)
	status, ok := statusOf[e.Code]
	if !ok {
		status = http.StatusInternalServerError
	}
	ctx := r.Context()
	reqID := middleware.RequestIDFromContext(ctx)
	detail := e.Message
	if status >= 500 {
		ew.logger.ErrorContext(ctx, "request failed", "request_id", reqID, "code", string(e.Code), "error", err.Error())
		if e.Code == errs.Internal {
			detail = "an internal error occurred; quote the request id when reporting it"
		}
	} else if e.Err != nil {
		ew.logger.DebugContext(ctx, "request refused", "request_id", reqID, "code", string(e.Code), "error", err.Error())
	}
	code := gen.ProblemCode(e.Code)
	p := gen.Problem{
		Type:      problemType(e.Code),
		Title:     http.StatusText(status),
		Status:    status,
		Code:      code,
		Detail:    &detail,
		Instance:  ptr(r.URL.Path),
		RequestId: ptr(reqID),
	}
	if len(e.Fields) > 0 {
		fields := make([]gen.FieldError, len(e.Fields))
		for i, f := range e.Fields {
			fields[i] = gen.FieldError{Name: f.Name, Reason: f.Reason}
		}
		p.Errors = &fields
	}
	// The challenges point to the protected-resource metadata (RFC 9728 §5.1), as the MCP
	// authorization specification requires of the kernel's 401s.
	meta := ""
	if base := baseURLFrom(ctx); base != "" {
		meta = `, resource_metadata="` + base + resourceMetadataPath + `"`
	}
	if e.Code == errs.Unauthenticated {
		if e.Err != nil && errors.Is(e.Err, errInvalidToken) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="nops", error="invalid_token"`+meta)
		} else {
			w.Header().Set("WWW-Authenticate", `Bearer realm="nops"`+meta)
		}
	}
	if e.Code == errs.Forbidden && errors.Is(e.Err, errInsufficientScope) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="nops", error="insufficient_scope"`+meta)
	}
	if e.RetryAfter > 0 && (e.Code == errs.Unavailable || e.Code == errs.RateLimited) {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(e.RetryAfter.Seconds()))))
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Del("Content-Length")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(p)
}

// classify returns err as an *errs.Error, mapping the errors of the standard library and the
// generated code that reach the edge.
func classify(err error) *errs.Error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return errs.Wrap(errs.TooLarge, err, "request body larger than %d bytes", mbe.Limit)
	}
	if e := errs.As(err); e != nil {
		return e
	}
	return errs.Wrap(errs.Internal, err, "internal error")
}

func ptr[T any](v T) *T { return &v }
