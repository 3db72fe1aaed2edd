package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3filter"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	tnoop "go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/mod/sumdb/note"

	"github.com/nops-kernel/nops/internal/apikey"
	"github.com/nops-kernel/nops/internal/audit"
	"github.com/nops-kernel/nops/internal/auth"
	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/control"
	"github.com/nops-kernel/nops/internal/health"
	"github.com/nops-kernel/nops/internal/registry"
	"github.com/nops-kernel/nops/internal/sealbox"
	"github.com/nops-kernel/nops/internal/store/sqlite"
	"github.com/nops-kernel/nops/internal/tenant"
	"github.com/nops-kernel/nops/internal/token"
)

// flow is the whole API over a real SQLite store in a temporary directory, wired as the kernel
// wires it, for tests that drive the handlers through the perimeter.
type flow struct {
	t        *testing.T
	h        http.Handler
	contract *Contract
	st       *sqlite.Store
	signer   *audit.Signer
}

// discardUsage drops last-use times.
type discardUsage struct{}

func (discardUsage) Record(string, time.Time) {}

const flowAdminPassword = "flow-admin-password-1"

func newFlow(t *testing.T) *flow {
	t.Helper()
	deps, st, signer := newFlowDeps(t)
	h, err := NewHandler(deps)
	if err != nil {
		t.Fatal(err)
	}
	contract, err := NewContract()
	if err != nil {
		t.Fatal(err)
	}
	return &flow{t: t, h: h, contract: contract, st: st, signer: signer}
}

// newFlowDeps returns Deps over a fresh SQLite store, with the store and the audit signer.
func newFlowDeps(t *testing.T) (Deps, *sqlite.Store, *audit.Signer) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	logger := slog.New(slog.DiscardHandler)
	st, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(dir, "nops.db")}, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	if err := st.MigrateUp(ctx); err != nil {
		t.Fatal(err)
	}
	kek, err := sealbox.LoadOrCreateFile(filepath.Join(dir, "kek.json"))
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := token.New(ctx, st, token.Config{Issuer: "nops", Audience: "nops", Algorithm: "HS256",
		HS256Secret: []byte("0123456789abcdef0123456789abcdef"), TTL: time.Hour, Sealer: kek}, logger)
	if err != nil {
		t.Fatal(err)
	}
	pep, err := apikey.PepperFromConfig("v1", "pepper-0123456789abcdef0123456789abcdef")
	if err != nil {
		t.Fatal(err)
	}
	peppers, err := apikey.NewPeppers(pep)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := apikey.NewService(st, peppers, nil, logger, apikey.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tenants, err := tenant.NewService(st, tenant.Config{})
	if err != nil {
		t.Fatal(err)
	}
	agents, err := registry.NewService(st, registry.Config{})
	if err != nil {
		t.Fatal(err)
	}
	signer, vkey, err := audit.LoadOrCreateSigner(filepath.Join(dir, "audit.key"), "nops-flow")
	if err != nil {
		t.Fatal(err)
	}
	ctl := control.New(st, tenants, agents, keys, control.Options{Logger: logger})
	if err := auth.Bootstrap(ctx, st, flowAdminPassword, bcrypt.MinCost, io.Discard, logger, time.Now()); err != nil {
		t.Fatal(err)
	}
	logins, err := auth.New(st, tokens, auth.Options{Logger: logger, BcryptCost: bcrypt.MinCost, APIKeys: keys,
		Sleep: func(context.Context, time.Duration) {}})
	if err != nil {
		t.Fatal(err)
	}
	return Deps{
		Logger: logger, Config: config.Default(), Health: fixedHealth{health.Report{Ready: true}},
		Keys: tokens, Login: logins, Verifier: tokens,
		Control: ctl, APIKeys: keys, Usage: discardUsage{},
		AuditLog: st, AuditKeys: note.VerifierList(signer.Verifier()), AuditKey: vkey,
		TracerProvider: tnoop.NewTracerProvider(), MeterProvider: noop.NewMeterProvider(),
		Propagator: propagation.TraceContext{}, Metrics: http.NotFoundHandler(),
		Version: "v", Commit: "c", StartedAt: time.Now(),
	}, st, signer
}

// call sends a request with the given credential header ("Bearer …" or "key:…") and returns the
// status, the headers and the decoded JSON body (nil when there is none).
func (f *flow) call(method, path, cred string, body any, hdr ...string) (int, http.Header, map[string]any) {
	f.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			f.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	r := httptest.NewRequest(method, path, rd)
	if body != nil {
		r.Header.Set("Content-Type", "application/json")
	}
	switch {
	case strings.HasPrefix(cred, "key:"):
		r.Header.Set("X-API-Key", strings.TrimPrefix(cred, "key:"))
	case cred != "":
		r.Header.Set("Authorization", cred)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	var reqBody []byte
	if body != nil {
		reqBody, _ = io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(reqBody))
	}
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, r)
	f.checkResponse(r, reqBody, rec)
	var out map[string]any
	if rec.Body.Len() > 0 {
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			f.t.Fatalf("%s %s: body %q: %v", method, path, rec.Body.String(), err)
		}
	}
	return rec.Code, rec.Header(), out
}

// checkResponse fails the test when a response to a request the contract allows is not one the
// contract declares, with a body of the declared schema.
func (f *flow) checkResponse(r *http.Request, reqBody []byte, rec *httptest.ResponseRecorder) {
	f.t.Helper()
	route, params, ok := f.contract.Match(r)
	if !ok {
		f.t.Fatalf("%s %s is not in the contract", r.Method, r.URL.Path)
	}
	ctx := context.Background()
	clone := r.Clone(ctx)
	clone.Body = io.NopCloser(bytes.NewReader(reqBody))
	in := &openapi3filter.RequestValidationInput{Request: clone, PathParams: params, Route: route,
		Options: &openapi3filter.Options{MultiError: true, AuthenticationFunc: func(context.Context, *openapi3filter.AuthenticationInput) error { return nil }}}
	if openapi3filter.ValidateRequest(ctx, in) != nil {
		return // refused by the perimeter; its problems are the perimeter's tests' business
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: rec.Code, Header: rec.Header(),
		Body: io.NopCloser(bytes.NewReader(rec.Body.Bytes())), Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true}}
	if err := openapi3filter.ValidateResponse(ctx, out); err != nil {
		f.t.Errorf("%s %s → %d: response outside the contract: %v\n%s", r.Method, r.URL.Path, rec.Code, err, rec.Body.String())
	}
}

// must is call expecting status want.
func (f *flow) must(want int, method, path, cred string, body any, hdr ...string) (http.Header, map[string]any) {
	f.t.Helper()
	got, h, out := f.call(method, path, cred, body, hdr...)
	if got != want {
		f.t.Fatalf("%s %s: status %d, want %d: %v", method, path, got, want, out)
	}
	return h, out
}

// eventually repeats a request until it gets status want, for at most a second.
func (f *flow) eventually(want int, method, path, cred string) {
	f.t.Helper()
	deadline := time.Now().Add(time.Second)
	for {
		got, _, out := f.call(method, path, cred, nil)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("%s %s: status %d, want %d: %v", method, path, got, want, out)
		}
	}
}

func (f *flow) login(body any) string {
	f.t.Helper()
	_, out := f.must(200, "POST", "/v1/auth/token", "", body)
	return "Bearer " + out["access_token"].(string)
}

func fieldNames(problem map[string]any) []string {
	var names []string
	list, _ := problem["errors"].([]any)
	for _, e := range list {
		names = append(names, e.(map[string]any)["name"].(string))
	}
	return names
}

func TestFlowTenantsAgentsKeysAudit(t *testing.T) {
	f := newFlow(t)
	admin := f.login(map[string]any{"username": "admin", "password": flowAdminPassword})

	// Tenants.
	_, ten := f.must(201, "POST", "/v1/tenants", admin, map[string]any{"name": "acme", "display_name": "Acme"})
	tid := ten["id"].(string)
	f.must(409, "POST", "/v1/tenants", admin, map[string]any{"name": "acme"})
	_, list := f.must(200, "GET", "/v1/tenants?limit=1", admin, nil)
	if items := list["items"].([]any); len(items) != 1 || list["next_cursor"] != nil {
		t.Fatalf("tenant list %v", list)
	}
	f.must(200, "GET", "/v1/tenants/"+tid, admin, nil)
	f.must(404, "GET", "/v1/tenants/ten_nope", admin, nil)

	// An ADMIN key of the tenant, its scopes defaulted from the role; the secret shows once.
	_, key := f.must(201, "POST", "/v1/api-keys?tenant="+tid, admin, map[string]any{"name": "ci", "role": "ADMIN"})
	secret := key["secret"].(string)
	if key["tenant"] != tid || len(key["scopes"].([]any)) == 0 {
		t.Fatalf("created key %v", key)
	}
	kid := key["id"].(string)
	_, got := f.must(200, "GET", "/v1/api-keys/"+kid, admin, nil) // SUPER_ADMIN across tenants
	if _, leaked := got["secret"]; leaked {
		t.Fatalf("get shows the secret: %v", got)
	}
	tenantCred := "key:" + secret

	// Agents, with the tenant's key.
	spec := map[string]any{"name": "summarizer", "version": "v1.2.3", "endpoint": "https://agent.example/run",
		"labels": map[string]any{"env": "prod"},
		"capabilities": []any{map[string]any{"name": "text.summarize",
			"input_schema": map[string]any{"type": "object", "properties": map[string]any{"text": map[string]any{"type": "string"}}}}}}
	hdr, agent := f.must(201, "POST", "/v1/agents", tenantCred, spec)
	aid, etag := agent["id"].(string), hdr.Get("ETag")
	if etag == "" || agent["tenant"] != tid || agent["version"] != "1.2.3" {
		t.Fatalf("registered %v etag %q", agent, etag)
	}
	if _, ok := agent["metadata"].(map[string]any); !ok {
		t.Fatalf("metadata not an object: %v", agent)
	}
	if _, ok := agent["load"].(map[string]any); !ok {
		t.Fatalf("load not an object: %v", agent)
	}
	caps := agent["capabilities"].([]any)
	if s := caps[0].(map[string]any)["input_schema"].(map[string]any); s["type"] != "object" {
		t.Fatalf("input schema %v", s)
	}
	f.must(409, "POST", "/v1/agents", tenantCred, spec)
	hdr, _ = f.must(200, "GET", "/v1/agents/"+aid, tenantCred, nil)
	if hdr.Get("ETag") != etag {
		t.Fatalf("get etag %q, registered %q", hdr.Get("ETag"), etag)
	}
	spec["version"] = "1.3.0"
	hdr, _ = f.must(200, "PUT", "/v1/agents/"+aid, tenantCred, spec, "If-Match", etag)
	f.must(412, "PUT", "/v1/agents/"+aid, tenantCred, spec, "If-Match", etag)
	if hdr.Get("ETag") == etag {
		t.Fatal("etag unchanged by an update")
	}
	_, hb := f.must(200, "POST", "/v1/agents/"+aid+"/heartbeat", tenantCred, map[string]any{"in_flight": 3, "p50_ms": 5.5})
	if hb["agent_id"] != aid || hb["status"] != "healthy" {
		t.Fatalf("heartbeat %v", hb)
	}
	f.must(200, "POST", "/v1/agents/"+aid+"/heartbeat", tenantCred, nil)
	_, agents := f.must(200, "GET", "/v1/agents?selector=env%3Dprod&status=healthy,stale&capability=text.summarize", tenantCred, nil)
	if items := agents["items"].([]any); len(items) != 1 {
		t.Fatalf("agent list %v", agents)
	}
	_, agents = f.must(200, "GET", "/v1/agents?selector=env%3Dstaging", tenantCred, nil)
	if items := agents["items"].([]any); len(items) != 0 {
		t.Fatalf("agent list %v", agents)
	}
	_, bad := f.must(400, "GET", "/v1/agents?status=healthy,dead", tenantCred, nil)
	if names := fieldNames(bad); len(names) != 1 || names[0] != "query.status" {
		t.Fatalf("bad status: %v", bad)
	}
	_, bad = f.must(400, "GET", "/v1/agents?selector=a%3D%3D%3Db", tenantCred, nil)
	if names := fieldNames(bad); len(names) != 1 || names[0] != "query.selector" {
		t.Fatalf("bad selector: %v", bad)
	}
	// A tenant-bound caller naming another tenant, or a SUPER_ADMIN naming none.
	f.must(404, "GET", "/v1/agents?tenant=ten_01jq0000000000000000000000", tenantCred, nil)
	f.must(400, "GET", "/v1/agents", admin, nil)
	f.must(200, "GET", "/v1/agents/"+aid+"?tenant="+tid, admin, nil)

	// Token for the key, narrowed.
	keyTok := f.login(map[string]any{"api_key": secret, "scope": "agents:read"})
	f.must(200, "GET", "/v1/agents/"+aid, keyTok, nil)
	f.must(403, "DELETE", "/v1/agents/"+aid, keyTok, nil)
	f.must(401, "POST", "/v1/auth/token", "", map[string]any{"api_key": secret + "x"})

	// Key rotation with no grace: the old secret stops at once.
	_, rot := f.must(200, "POST", "/v1/api-keys/"+kid+"/rotate", tenantCred, map[string]any{"grace_period": "0s"})
	newCred := "key:" + rot["secret"].(string)
	f.eventually(401, "GET", "/v1/agents/"+aid, tenantCred) // past the one-microsecond grace the service can express
	f.must(200, "GET", "/v1/agents/"+aid, newCred, nil)
	_, bad = f.must(400, "POST", "/v1/api-keys/"+kid+"/rotate", newCred, map[string]any{"grace_period": "soon"})
	if names := fieldNames(bad); len(names) != 1 || names[0] != "body.grace_period" {
		t.Fatalf("bad grace: %v", bad)
	}
	_, keys := f.must(200, "GET", "/v1/api-keys?limit=500", newCred, nil)
	if items := keys["items"].([]any); len(items) != 1 {
		t.Fatalf("key list %v", keys)
	}

	// Another tenant's credential sees none of acme's objects.
	_, other := f.must(201, "POST", "/v1/tenants", admin, map[string]any{"name": "globex"})
	_, okey := f.must(201, "POST", "/v1/api-keys?tenant="+other["id"].(string), admin, map[string]any{"name": "ops", "role": "ADMIN"})
	otherCred := "key:" + okey["secret"].(string)
	f.must(404, "GET", "/v1/agents/"+aid, otherCred, nil)
	f.must(404, "PUT", "/v1/agents/"+aid, otherCred, spec, "If-Match", "*")
	f.must(404, "POST", "/v1/agents/"+aid+"/heartbeat", otherCred, nil)
	f.must(404, "DELETE", "/v1/agents/"+aid, otherCred, nil)
	f.must(404, "GET", "/v1/api-keys/"+kid, otherCred, nil)
	f.must(404, "POST", "/v1/api-keys/"+kid+"/rotate", otherCred, nil)
	f.must(404, "DELETE", "/v1/api-keys/"+kid, otherCred, nil)
	f.must(404, "GET", "/v1/api-keys/"+kid+"?tenant="+other["id"].(string), admin, nil)
	f.must(403, "GET", "/v1/tenants/"+tid, otherCred, nil) // tenants:read is SUPER_ADMIN's
	_, ol := f.must(200, "GET", "/v1/agents", otherCred, nil)
	if items := ol["items"].([]any); len(items) != 0 {
		t.Fatalf("other tenant lists %v", ol)
	}

	f.must(204, "DELETE", "/v1/agents/"+aid, newCred, nil)
	f.must(404, "GET", "/v1/agents/"+aid, newCred, nil)

	// Audit: the tenant's records, paged.
	_, page := f.must(200, "GET", "/v1/audit?limit=2", newCred, nil)
	items := page["items"].([]any)
	if len(items) != 2 || page["next_cursor"] != "1" {
		t.Fatalf("audit page %v", page)
	}
	_, page = f.must(200, "GET", "/v1/audit?cursor=1&decision=allow&action=agent.update", newCred, nil)
	if items := page["items"].([]any); len(items) != 1 || items[0].(map[string]any)["action"] != "agent.update" {
		t.Fatalf("filtered audit page %v", page)
	}
	_, bad = f.must(400, "GET", "/v1/audit?cursor=x", newCred, nil)
	if names := fieldNames(bad); len(names) != 1 || names[0] != "query.cursor" {
		t.Fatalf("bad cursor: %v", bad)
	}
	f.must(404, "GET", "/v1/audit/checkpoint", newCred, nil)
	f.must(404, "GET", "/v1/audit/proof/inclusion?seq=0", newCred, nil)

	cp, err := audit.SignCheckpoint(context.Background(), f.st, f.signer, tid)
	if err != nil {
		t.Fatal(err)
	}
	_, ck := f.must(200, "GET", "/v1/audit/checkpoint", newCred, nil)
	if ck["size"] != float64(cp.Size) || ck["note"] != string(cp.Note) || ck["verifier_key"] != f.signer.VerifierKey() {
		t.Fatalf("checkpoint %v", ck)
	}
	size := strconv.FormatInt(cp.Size, 10)
	_, bundle := f.must(200, "GET", "/v1/audit/proof/inclusion?seq=1&size="+size, newCred, nil)
	raw, err := json.Marshal(bundle)
	if err != nil {
		t.Fatal(err)
	}
	b, err := audit.ParseBundle(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := audit.CheckBundle(b, f.signer.VerifierKey()); err != nil {
		t.Fatalf("served bundle does not check: %v", err)
	}
	f.must(404, "GET", "/v1/audit/proof/inclusion?seq=1&size="+strconv.FormatInt(cp.Size+1, 10), newCred, nil)
	_, bad = f.must(400, "GET", "/v1/audit/proof/inclusion?seq="+size, newCred, nil)
	if names := fieldNames(bad); len(names) != 1 || names[0] != "query.seq" {
		t.Fatalf("seq beyond the checkpoint: %v", bad)
	}
	_, cons := f.must(200, "GET", "/v1/audit/proof/consistency?from=1&to="+size, newCred, nil)
	if cons["tree"] != tid || len(cons["proof"].([]any)) == 0 {
		t.Fatalf("consistency %v", cons)
	}
	_, bad = f.must(400, "GET", "/v1/audit/proof/consistency?from=2&to=1", newCred, nil)
	if names := fieldNames(bad); len(names) != 1 || names[0] != "query.from" {
		t.Fatalf("from > to: %v", bad)
	}
	_, rep := f.must(200, "GET", "/v1/audit/verify", newCred, nil)
	if rep["ok"] != true || rep["tree"] != tid {
		t.Fatalf("verify %v", rep)
	}
	// The SUPER_ADMIN reads the global tree, which holds the tenant's creation and the failed login.
	_, global := f.must(200, "GET", "/v1/audit?limit=500", admin, nil)
	var actions []string
	for _, it := range global["items"].([]any) {
		actions = append(actions, it.(map[string]any)["action"].(string))
	}
	if !strings.Contains(strings.Join(actions, " "), control.ActionTenantCreate) || !strings.Contains(strings.Join(actions, " "), control.ActionLogin) {
		t.Fatalf("global audit actions %v", actions)
	}

	// Revocation, suspension, deletion.
	f.must(204, "DELETE", "/v1/api-keys/"+kid+"?tenant="+tid, admin, nil)
	f.must(401, "GET", "/v1/agents", newCred, nil)
	_, sus := f.must(200, "POST", "/v1/tenants/"+tid+"/suspend", admin, nil)
	if sus["status"] != "suspended" {
		t.Fatalf("suspend %v", sus)
	}
	f.must(200, "POST", "/v1/tenants/"+tid+"/resume", admin, nil)
	f.must(204, "DELETE", "/v1/tenants/"+tid+"?cascade=true", admin, nil)
	f.must(404, "GET", "/v1/tenants/"+tid, admin, nil)
}
