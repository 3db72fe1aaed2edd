package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/auth"
	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/health"
	"github.com/nops-kernel/nops/internal/middleware"
	"github.com/nops-kernel/nops/internal/principal"
)

type panickingHealth struct{}

func (panickingHealth) Check(context.Context) health.Report { panic("probe exploded: secret-detail") }

type fixedHealth struct{ rep health.Report }

func (f fixedHealth) Check(context.Context) health.Report { return f.rep }

type noKeys struct{}

func (noKeys) JWKS(context.Context) ([]byte, error) { return []byte(`{"keys":[]}`), nil }

type noLogin struct{}

func (noLogin) Login(context.Context, string, string, string) (auth.Token, error) {
	return auth.Token{}, errs.New(errs.Unauthenticated, "invalid username or password")
}

func (noLogin) LoginAPIKey(context.Context, string, string) (auth.Token, error) {
	return auth.Token{}, errs.New(errs.Unauthenticated, "invalid api key")
}

type noVerify struct{}

func (noVerify) Verify(context.Context, string) (principal.Principal, error) {
	return principal.Principal{}, errs.New(errs.Unauthenticated, "invalid or expired token")
}

func newTestHandler(t *testing.T, hc Readiness, logs *strings.Builder) http.Handler {
	t.Helper()
	deps, _, _ := newFlowDeps(t)
	deps.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	deps.Health, deps.Keys, deps.Login, deps.Verifier = hc, noKeys{}, noLogin{}, noVerify{}
	h, err := NewHandler(deps)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestPanicInHandler makes a real route's dependency panic: the response is a generic 500
// problem with every security header, and the panic is logged, not returned.
func TestPanicInHandler(t *testing.T) {
	var logs strings.Builder
	h := newTestHandler(t, panickingHealth{}, &logs)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/_readyz", nil))
	if rec.Code != 500 {
		t.Fatalf("status %d", rec.Code)
	}
	for name, want := range middleware.SecurityHeaderValues() {
		if got := rec.Header().Get(name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type %q", ct)
	}
	if strings.Contains(rec.Body.String(), "secret-detail") || strings.Contains(rec.Body.String(), "goroutine") {
		t.Errorf("panic details leaked: %s", rec.Body.String())
	}
	if !strings.Contains(logs.String(), "probe exploded") {
		t.Errorf("panic not logged: %s", logs.String())
	}
}

func TestEveryCodeHasAStatus(t *testing.T) {
	for _, c := range []errs.Code{errs.Invalid, errs.Unauthenticated, errs.Forbidden, errs.NotFound, errs.MethodNotAllowed,
		errs.Conflict, errs.PreconditionFailed, errs.TooLarge, errs.UnsupportedMediaType, errs.RateLimited, errs.Unavailable, errs.Internal} {
		if _, ok := statusOf[c]; !ok {
			t.Errorf("code %s has no HTTP status", c)
		}
	}
	// The spec's enum of problem codes and the mapping agree.
	doc, err := Spec()
	if err != nil {
		t.Fatal(err)
	}
	enum := doc.Components.Schemas["Problem"].Value.Properties["code"].Value.Enum
	if len(enum) != len(statusOf) {
		t.Errorf("spec lists %d problem codes, mapping has %d", len(enum), len(statusOf))
	}
	for _, v := range enum {
		if _, ok := statusOf[errs.Code(v.(string))]; !ok {
			t.Errorf("spec code %v is not mapped", v)
		}
	}
}

func TestInternalErrorsAreNotReturned(t *testing.T) {
	var logs strings.Builder
	ew := errorWriter{logger: slog.New(slog.NewJSONHandler(&logs, nil))}
	rec := httptest.NewRecorder()
	ew.Write(rec, httptest.NewRequest("GET", "/x", nil), errs.Wrap(errs.Internal, errFake("pq: password authentication failed for user nops"), "load user"))
	var p map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(rec.Body.String(), "pq:") || strings.Contains(rec.Body.String(), "load user") {
		t.Errorf("body leaks the cause: %s", rec.Body.String())
	}
	if !strings.Contains(logs.String(), "pq: password authentication failed") {
		t.Errorf("cause not logged: %s", logs.String())
	}
}

// TestBackpressureAnswers503WithRetryAfter: a publish that found the bus saturated reaches the
// client as 503 with Retry-After (rounded up to whole seconds) and the unavailable problem.
func TestBackpressureAnswers503WithRetryAfter(t *testing.T) {
	ew := errorWriter{logger: slog.New(slog.DiscardHandler)}
	rec := httptest.NewRecorder()
	ew.Write(rec, httptest.NewRequest("POST", "/v1/dlq/reprocess", nil), fmt.Errorf("redeliver: %w", bus.Backpressure(5*time.Second, 1500*time.Millisecond)))
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") != "2" {
		t.Fatalf("status %d, Retry-After %q; want 503 and 2", rec.Code, rec.Header().Get("Retry-After"))
	}
	if !strings.Contains(rec.Body.String(), `"code":"unavailable"`) {
		t.Errorf("problem %s", rec.Body.String())
	}
	// Without a hint, no header; and never on other codes.
	rec = httptest.NewRecorder()
	ew.Write(rec, httptest.NewRequest("GET", "/x", nil), &errs.Error{Code: errs.Invalid, Message: "bad", RetryAfter: time.Second})
	if rec.Header().Get("Retry-After") != "" {
		t.Errorf("Retry-After on a 400: %q", rec.Header().Get("Retry-After"))
	}
}

type errFake string

func (e errFake) Error() string { return string(e) }

func TestReadinessReportsEachCheck(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var logs strings.Builder
	h := newTestHandler(t, fixedHealth{health.Report{Ready: false, Checks: []health.Result{
		{Name: "database", Up: true, Latency: 1500 * time.Microsecond, CheckedAt: now},
		{Name: "bus", Up: false, Error: "timeout", Latency: time.Second, CheckedAt: now},
	}}}, &logs)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/_readyz", nil))
	if rec.Code != 503 {
		t.Fatalf("status %d", rec.Code)
	}
	want := `{"checks":[{"checked_at":"2026-01-01T00:00:00Z","latency_ms":1.5,"name":"database","status":"up"},{"checked_at":"2026-01-01T00:00:00Z","error":"timeout","latency_ms":1000,"name":"bus","status":"down"}],"status":"not_ready"}`
	if got := strings.TrimSpace(rec.Body.String()); got != want {
		t.Fatalf("body\n got %s\nwant %s", got, want)
	}
}
