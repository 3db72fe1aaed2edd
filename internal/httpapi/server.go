// Package httpapi is the kernel's HTTP edge: the perimeter middleware chain, the dispatcher that
// enforces the OpenAPI contract (api/kernel.yaml) on every request, the handlers implementing the
// generated strict server interface (gen/), and the one mapping of errs codes to RFC 9457
// problems. Only internal/kernel imports httpapi.
package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/mod/sumdb/note"

	"github.com/nops-kernel/nops/internal/apikey"
	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/control"
	"github.com/nops-kernel/nops/internal/degrade"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/flags"
	"github.com/nops-kernel/nops/internal/httpapi/gen"
	"github.com/nops-kernel/nops/internal/idempotency"
	"github.com/nops-kernel/nops/internal/middleware"
	"github.com/nops-kernel/nops/internal/mtls"
)

// Deps are what the API serves from. Every field is required except Now.
type Deps struct {
	Logger   *slog.Logger
	Config   config.Config
	Health   Readiness
	Keys     KeySet
	Login    Login
	Verifier Verifier

	Control   *control.Control // audited use cases; also the tenant, registry and key services
	APIKeys   KeyVerifier      // X-API-Key
	Usage     apikey.UsageSink // last-use times of API keys
	AuditLog  AuditLog         // reads of the audit trail
	AuditKeys note.Verifiers   // verify the trail's checkpoints
	AuditKey  string           // the published verifier key of the checkpoints

	// Idempotency keeps the Idempotency-Key records of POST and PATCH requests; nil turns the
	// header's handling off (requests are served as if it were absent).
	Idempotency idempotency.Store

	// The event bus console (/v1/dlq*, /v1/events/*); those endpoints answer 503 while Bus (or,
	// for the statistics, EventStats) is nil.
	Bus        EventBus         // the kernel's bus.Bus
	EventStats EventStatsReader // the event-stats projection
	Consumers  []string         // names of the consumers the kernel runs: the replay targets

	// Invoke runs POST /v1/invoke/{capability}; nil answers 503.
	Invoke Invoker

	// MCP serves POST /mcp and /v1/mcp/tools*; nil answers 503.
	MCP MCPServer

	// Flags evaluates feature flags in memory (GET /v1/flags/{key}/evaluation); nil answers 503.
	Flags *flags.Evaluator

	// Secrets reports the rotation status of the pepper and the key-encryption key
	// (GET /v1/admin/secrets/status); nil answers 503.
	Secrets SecretsReporter

	// Identity is the built-in CA of /v1/identity/*; nil answers 503.
	Identity IdentityCA

	// Revocations stores the SVID revocations of /v1/identity/revocations (the kernel's store);
	// nil answers 503 there.
	Revocations control.RevocationStore
	// Revoker applies a new revocation on this replica's mTLS listener at once (*mtls.Server);
	// nil when the listener is off. A failure is logged: the store has the revocation, and every
	// replica's listener (this one's included) reads it within its refresh interval.
	Revoker interface {
		Revoke(ctx context.Context, rs ...mtls.Revocation) error
	}

	// Degrade holds the degraded modes: the edge refuses what they do not serve, /healthz and
	// GET /v1/status show them. Nil: no degraded modes (GET /v1/status answers 503).
	Degrade *degrade.Monitor

	// Guards are the perimeter's rate limits, in-flight gates, policies and HSTS; the zero
	// value turns them off.
	Guards Guards

	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
	Propagator     propagation.TextMapPropagator
	Metrics        http.Handler // GET /metrics

	Version, Commit string
	StartedAt       time.Time
	Now             func() time.Time
}

func (d Deps) now() time.Time {
	if d.Now != nil {
		return d.Now()
	}
	return time.Now()
}

// NewHandler returns the whole API: perimeter middleware around the contract-enforcing
// dispatcher around the routes.
func NewHandler(deps Deps) (http.Handler, error) {
	doc, err := Spec()
	if err != nil {
		return nil, err
	}
	ops, err := operations(doc)
	if err != nil {
		return nil, err
	}
	spec, err := specJSON(doc)
	if err != nil {
		return nil, err
	}
	versions, err := newVersioning(doc)
	if err != nil {
		return nil, err
	}
	matrix, err := degrade.NewMatrix()
	if err != nil {
		return nil, err
	}
	errw := errorWriter{logger: deps.Logger}
	mux := http.NewServeMux()
	d := &dispatcher{mux: mux, ops: ops, verifier: deps.Verifier, keys: deps.APIKeys, usage: deps.Usage,
		tenants: deps.Control.Tenants, auditor: deps.Control, agents: deps.Control.Agents, guards: deps.Guards,
		now: deps.now, errw: errw}
	hs := &handlers{deps: deps}
	strict := gen.NewStrictHandlerWithOptions(hs, nil, gen.StrictHTTPServerOptions{
		RequestErrorHandlerFunc: func(w http.ResponseWriter, r *http.Request, err error) {
			var mbe *http.MaxBytesError
			if !errors.As(err, &mbe) && errs.As(err) == nil {
				err = errs.Wrap(errs.Invalid, err, "malformed request body")
			}
			errw.Write(w, r, err)
		},
		ResponseErrorHandlerFunc: errw.Write,
	})
	// The generated wrappers apply the last middleware outermost: admission runs first.
	middlewares := []gen.MiddlewareFunc{d.admission}
	idem, err := idempotencyMiddleware(deps, errw)
	if err != nil {
		return nil, err
	}
	if idem != nil {
		middlewares = []gen.MiddlewareFunc{idem, d.admission}
	}
	gen.HandlerWithOptions(strict, gen.StdHTTPServerOptions{
		BaseRouter:  mux,
		Middlewares: middlewares,
		ErrorHandlerFunc: func(w http.ResponseWriter, r *http.Request, err error) {
			errw.Write(w, r, paramError(r, err))
		},
	})
	mux.Handle("GET /metrics", d.admission(deps.Metrics))
	mux.Handle("POST /v1/invoke/{capability}", d.admission(d.invokeHandler(hs)))
	mux.Handle("POST /mcp", d.admission(d.mcpHandler(hs)))
	mux.Handle("GET /openapi.json", d.admission(serveBytes("application/json", spec)))
	for pattern := range ops {
		if _, registered := muxHas(mux, pattern); !registered {
			return nil, fmt.Errorf("spec operation %s has no handler", pattern)
		}
	}
	return middleware.Chain(d,
		middleware.RequestID(),
		withBaseURL(deps.Config),
		middleware.WithRouteHolder(),
		middleware.SecurityHeaders(),
		hsts(deps.Guards.HSTSMaxAge),
		middleware.Tracing(deps.TracerProvider, deps.Propagator),
		middleware.Metrics(deps.MeterProvider),
		middleware.Logging(deps.Logger),
		middleware.Recover(deps.Logger, errw.Write),
		deps.Guards.edge(errw, matrix, deps.Degrade),
		middleware.BodyLimit(deps.Config.HTTP.MaxBodyBytes, errw.Write),
		versions.middleware(errw),
	), nil
}

// hsts sends Strict-Transport-Security on HTTPS responses when maxAge > 0.
func hsts(maxAge time.Duration) func(http.Handler) http.Handler {
	if maxAge <= 0 {
		return func(h http.Handler) http.Handler { return h }
	}
	return middleware.HSTS(maxAge, true)
}

// muxHas reports whether pattern ("GET /path") is served by a route of mux.
func muxHas(mux *http.ServeMux, pattern string) (string, bool) {
	var method, path string
	if _, err := fmt.Sscanf(pattern, "%s %s", &method, &path); err != nil {
		return "", false
	}
	r, err := http.NewRequestWithContext(context.Background(), method, "http://spec.invalid"+concretePath(path), nil)
	if err != nil {
		return "", false
	}
	_, got := mux.Handler(r)
	return got, got == pattern
}

// paramError turns an error of the generated parameter binding into a problem naming the
// parameter ("query.since", "header.Idempotency-Key", "path.agent_id") when the error says which.
func paramError(r *http.Request, err error) error {
	var name string
	var (
		format  *gen.InvalidParamFormatError
		unmarsh *gen.UnmarshalingParamError
		req     *gen.RequiredParamError
		reqHdr  *gen.RequiredHeaderError
		many    *gen.TooManyValuesForParamError
	)
	switch {
	case errors.As(err, &format):
		name = format.ParamName
	case errors.As(err, &unmarsh):
		name = unmarsh.ParamName
	case errors.As(err, &req):
		name = req.ParamName
	case errors.As(err, &reqHdr):
		name = reqHdr.ParamName
	case errors.As(err, &many):
		name = many.ParamName
	}
	if name == "" {
		return errs.Wrap(errs.Invalid, err, "invalid request parameters")
	}
	loc := "path"
	if reqHdr != nil {
		loc = "header" // missing, so not found among the request's headers below
	} else if r.URL.Query().Has(name) {
		loc = "query"
	} else if len(r.Header.Values(name)) > 0 {
		loc = "header"
	}
	e := errs.Field(loc+"."+name, "is malformed or missing")
	e.Err = err
	e.Message = "invalid request parameters"
	return e
}
