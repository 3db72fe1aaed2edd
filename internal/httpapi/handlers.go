package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/nops-kernel/nops/internal/auth"
	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/control"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/health"
	"github.com/nops-kernel/nops/internal/httpapi/gen"
	"github.com/nops-kernel/nops/internal/middleware"
	"github.com/nops-kernel/nops/internal/principal"
)

// Login exchanges credentials for a token; *auth.Service implements it.
type Login interface {
	Login(ctx context.Context, username, password, scope string) (auth.Token, error)
	LoginAPIKey(ctx context.Context, raw, scope string) (auth.Token, error)
}

// KeySet publishes the public signing keys; *token.Service implements it.
type KeySet interface {
	JWKS(ctx context.Context) ([]byte, error)
}

// Readiness reports dependency status; *health.Checker implements it.
type Readiness interface {
	Check(ctx context.Context) health.Report
}

// handlers implements the generated strict server interface. Handlers stay thin: decode, call a
// domain, encode; authentication, scopes and schema checks happened in the dispatcher.
type handlers struct {
	deps Deps
}

var _ gen.StrictServerInterface = (*handlers)(nil)

func (h *handlers) GetHealth(context.Context, gen.GetHealthRequestObject) (gen.GetHealthResponseObject, error) {
	return gen.GetHealth200JSONResponse{Status: gen.Ok}, nil
}

func (h *handlers) GetReadiness(ctx context.Context, _ gen.GetReadinessRequestObject) (gen.GetReadinessResponseObject, error) {
	rep := h.deps.Health.Check(ctx)
	body := gen.Readiness{Status: gen.Ready, Checks: checkResults(rep)}
	if !rep.Ready {
		body.Status = gen.NotReady
		return gen.GetReadiness503JSONResponse(body), nil
	}
	return gen.GetReadiness200JSONResponse(body), nil
}

func (h *handlers) GetHealthz(ctx context.Context, _ gen.GetHealthzRequestObject) (gen.GetHealthzResponseObject, error) {
	rep := h.deps.Health.Check(ctx)
	now := h.deps.now()
	body := gen.Healthz{
		Status:        gen.HealthzStatusUp,
		Version:       h.deps.Version,
		Commit:        h.deps.Commit,
		StartedAt:     h.deps.StartedAt.UTC(),
		UptimeSeconds: now.Sub(h.deps.StartedAt).Seconds(),
		Checks:        checkResults(rep),
	}
	if h.deps.Degrade != nil {
		st := h.deps.Degrade.Status()
		if modes := degradedModes(st, true); len(modes) > 0 {
			body.Degradation = &modes
			body.Status = gen.HealthzStatusDegraded
		}
	}
	if !rep.Ready {
		body.Status = gen.HealthzStatusDegraded
		return gen.GetHealthz503JSONResponse(body), nil
	}
	return gen.GetHealthz200JSONResponse(body), nil
}

func checkResults(rep health.Report) []gen.CheckResult {
	out := make([]gen.CheckResult, 0, len(rep.Checks))
	for _, c := range rep.Checks {
		r := gen.CheckResult{
			Name:      gen.CheckResultName(c.Name),
			Status:    gen.CheckResultStatusUp,
			LatencyMs: float64(c.Latency.Microseconds()) / 1000,
			CheckedAt: c.CheckedAt.UTC(),
		}
		if !c.Up {
			r.Status = gen.CheckResultStatusDown
			e := gen.CheckResultError(c.Error)
			r.Error = &e
		}
		out = append(out, r)
	}
	return out
}

func (h *handlers) GetJWKS(ctx context.Context, _ gen.GetJWKSRequestObject) (gen.GetJWKSResponseObject, error) {
	raw, err := h.deps.Keys.JWKS(ctx)
	if err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	var set gen.JWKSet
	if err := json.Unmarshal(raw, &set); err != nil {
		return nil, fmt.Errorf("decode jwks: %w", err)
	}
	return gen.GetJWKS200JSONResponse(set), nil
}

// CreateToken exchanges a password or an API key for a token. The contract's oneOf has already
// admitted exactly one of the two shapes; the required field present tells which. A refused
// credential is recorded in the audit trail (global tree: who tried is not known).
func (h *handlers) CreateToken(ctx context.Context, req gen.CreateTokenRequestObject) (gen.CreateTokenResponseObject, error) {
	var (
		tok    auth.Token
		err    error
		reason string
	)
	if key, kerr := req.Body.AsApiKeyLogin(); kerr == nil && key.ApiKey != "" {
		reason = "invalid api key"
		tok, err = h.deps.Login.LoginAPIKey(ctx, key.ApiKey, deref(key.Scope))
	} else {
		pw, perr := req.Body.AsPasswordLogin()
		if perr != nil || pw.Username == "" {
			return nil, errs.Wrap(errs.Invalid, perr, "send username and password, or api_key")
		}
		reason = "invalid username or password"
		tok, err = h.deps.Login.Login(ctx, pw.Username, pw.Password, deref(pw.Scope))
	}
	if err != nil {
		if errs.Is(err, errs.Unauthenticated) {
			h.auditLoginFailure(ctx, reason)
		}
		return nil, err
	}
	return gen.CreateToken200JSONResponse{
		AccessToken: tok.AccessToken,
		TokenType:   gen.Bearer,
		ExpiresIn:   int(tok.ExpiresAt.Sub(h.deps.now()).Round(time.Second).Seconds()),
		Scope:       strings.Join(tok.Scopes, " "),
	}, nil
}

// auditLoginFailure records a refused login; a failure to record is logged, and the login is
// refused anyway.
func (h *handlers) auditLoginFailure(ctx context.Context, reason string) {
	if err := h.deps.Control.Deny(ctx, "", control.ActionLogin, "POST /v1/auth/token", reason); err != nil {
		h.deps.Logger.ErrorContext(ctx, "audit a refused login", "request_id", middleware.RequestIDFromContext(ctx), "error", err)
	}
}

func (h *handlers) GetWhoami(ctx context.Context, _ gen.GetWhoamiRequestObject) (gen.GetWhoamiResponseObject, error) {
	p, ok := principal.FromContext(ctx)
	if !ok {
		return nil, errs.New(errs.Internal, "no principal on an authenticated route")
	}
	body := gen.Whoami{Subject: p.Subject, Roles: nonNil(p.Roles), Scopes: nonNil(p.Scopes), ExpiresAt: p.ExpiresAt.UTC()}
	if p.Tenant != "" {
		body.Tenant = &p.Tenant
	}
	if id := workloadIDFrom(ctx); id != "" {
		body.SpiffeId = &id
	}
	return gen.GetWhoami200JSONResponse(body), nil
}

func (h *handlers) GetSystemConfig(context.Context, gen.GetSystemConfigRequestObject) (gen.GetSystemConfigResponseObject, error) {
	c := h.deps.Config.Redacted()
	out := map[string]any{}
	for _, f := range config.Fields() {
		m := out
		parts := strings.Split(f.Path, ".")
		for _, p := range parts[:len(parts)-1] {
			next, ok := m[p].(map[string]any)
			if !ok {
				next = map[string]any{}
				m[p] = next
			}
			m = next
		}
		m[parts[len(parts)-1]] = f.Value(&c)
	}
	return gen.GetSystemConfig200JSONResponse(out), nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
