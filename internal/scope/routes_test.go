package scope_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/scope"
)

// checkResult is what the test mux's handler saw.
type checkResult struct {
	need scope.Scope
	err  error
}

// route serves one request through a real ServeMux holding every pattern of routes plus one
// pattern outside it, so that r.Pattern and the path values are set exactly as in the kernel.
func route(t *testing.T, routes *scope.Routes, w scope.Workload, granted []scope.Scope, method, path string) checkResult {
	t.Helper()
	var got checkResult
	h := func(_ http.ResponseWriter, r *http.Request) {
		got.need, got.err = routes.Check(r, w, granted)
	}
	mux := http.NewServeMux()
	for _, p := range append(routes.Patterns(), "GET /v1/audit") {
		mux.HandleFunc(p, h)
	}
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("%s %s was not routed: %d", method, path, rec.Code)
	}
	return got
}

func mustWorkload(t *testing.T, id spiffeid.ID) scope.Workload {
	t.Helper()
	w, err := scope.ParseWorkload(id, td)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestRoutesCheckAgent(t *testing.T) {
	routes := scope.DefaultRoutes()
	w := mustWorkload(t, agentID(tenantX, agentA))
	granted, err := scope.DefaultTable().For(w)
	if err != nil {
		t.Fatal(err)
	}
	allowed := []struct{ method, path, need string }{
		{"POST", "/v1/agents/" + agentA + "/heartbeat", "registry:heartbeat:" + tenantX},
		{"GET", "/v1/agents", "registry:read:" + tenantX},
		{"GET", "/v1/agents/" + agentB, "registry:read:" + tenantX},
		{"POST", "/v1/invoke/text.summarize", "invoke:text.summarize:" + tenantX},
		{"GET", "/v1/invocations/inv_1", "invocations:read:" + tenantX},
		{"POST", "/v1/identity/svid", "identity:renew:" + tenantX},
		{"GET", "/v1/auth/whoami", "identity:read:" + tenantX},
	}
	for _, tc := range allowed {
		t.Run("allowed "+tc.method+" "+tc.path, func(t *testing.T) {
			got := route(t, routes, w, granted, tc.method, tc.path)
			if got.err != nil {
				t.Fatalf("Check: %v", got.err)
			}
			if got.need.String() != tc.need {
				t.Errorf("need = %s, want %s", got.need, tc.need)
			}
		})
	}

	refused := []struct {
		name, method, path string
		cause              error
		need               string // in the message, when the scope is missing
	}{
		{"registry write not granted", "POST", "/v1/agents", scope.ErrMissingScope, "registry:write:" + tenantX},
		{"routing not granted", "PUT", "/v1/routes/text.summarize", scope.ErrMissingScope, "routing:write:" + tenantX},
		{"heartbeat of another agent", "POST", "/v1/agents/" + agentB + "/heartbeat", scope.ErrNotSelf, ""},
		{"operation outside the table", "GET", "/v1/audit", scope.ErrNotOpen, ""},
	}
	for _, tc := range refused {
		t.Run("refused "+tc.name, func(t *testing.T) {
			got := route(t, routes, w, granted, tc.method, tc.path)
			e := errs.As(got.err)
			if e == nil || e.Code != errs.Forbidden {
				t.Fatalf("Check = %v, want errs.Forbidden", got.err)
			}
			if !errors.Is(got.err, tc.cause) {
				t.Errorf("cause of %v is not %v", got.err, tc.cause)
			}
			if tc.need != "" && !strings.Contains(e.Message, tc.need) {
				t.Errorf("message %q does not name %s", e.Message, tc.need)
			}
		})
	}
}

func TestRoutesCheckNarrowGrant(t *testing.T) {
	// A grant for one capability allows that capability only.
	routes := scope.DefaultRoutes()
	w := mustWorkload(t, agentID(tenantX, agentA))
	granted := []scope.Scope{scope.MustParse("invoke:text.summarize:" + tenantX)}
	if got := route(t, routes, w, granted, "POST", "/v1/invoke/text.summarize"); got.err != nil {
		t.Errorf("granted capability refused: %v", got.err)
	}
	got := route(t, routes, w, granted, "POST", "/v1/invoke/text.translate")
	if !errs.Is(got.err, errs.Forbidden) || !strings.Contains(errs.As(got.err).Message, "invoke:text.translate:"+tenantX) {
		t.Errorf("other capability: %v, want Forbidden naming invoke:text.translate:%s", got.err, tenantX)
	}
	// The tenant of the needed scope is the caller's: a grant for another tenant is useless.
	other := []scope.Scope{scope.MustParse("invoke:*:" + tenantY)}
	if got := route(t, routes, w, other, "POST", "/v1/invoke/text.summarize"); !errs.Is(got.err, errs.Forbidden) {
		t.Errorf("grant of another tenant: %v, want Forbidden", got.err)
	}
}

func TestRoutesCheckKernel(t *testing.T) {
	routes := scope.DefaultRoutes()
	k := mustWorkload(t, spiffeid.RequireFromSegments(td, "kernel", "n1"))
	granted, err := scope.DefaultTable().For(k)
	if err != nil {
		t.Fatal(err)
	}
	got := route(t, routes, k, granted, "POST", "/v1/invoke/text.summarize")
	if got.err != nil || got.need.String() != "invoke:text.summarize:*" {
		t.Errorf("kernel invoke: need %s, err %v; want invoke:text.summarize:* allowed", got.need, got.err)
	}
	// A Self rule admits agents only, even when the scope is granted.
	all := []scope.Scope{scope.MustParse("*:*:*")}
	if got := route(t, routes, k, all, "POST", "/v1/agents/"+agentA+"/heartbeat"); !errors.Is(got.err, scope.ErrNotSelf) {
		t.Errorf("kernel heartbeat for an agent: %v, want ErrNotSelf", got.err)
	}
}

func TestRoutesCheckRefusesPathValuesThatAreNotSegments(t *testing.T) {
	routes := scope.DefaultRoutes()
	w := mustWorkload(t, agentID(tenantX, agentA))
	all := []scope.Scope{scope.MustParse("*:*:*")}
	for _, capability := range []string{"*", "a:b", "a%2Ab"} {
		got := route(t, routes, w, all, "POST", "/v1/invoke/"+capability)
		if !errs.Is(got.err, errs.Invalid) {
			t.Errorf("capability %q: %v, want errs.Invalid", capability, got.err)
		}
	}
}

func TestNewRoutesRefuses(t *testing.T) {
	for name, rules := range map[string]map[string]scope.Rule{
		"no method":          {"/v1/x": {Service: "a", Operation: "b"}},
		"no slash":           {"GET v1/x": {Service: "a", Operation: "b"}},
		"wildcard service":   {"GET /v1/x": {Service: "*", Operation: "b"}},
		"wildcard operation": {"GET /v1/x": {Service: "a", Operation: "*"}},
		"bad service":        {"GET /v1/x": {Service: "a:b", Operation: "b"}},
		"unknown parameter":  {"GET /v1/x/{id}": {Service: "a", Operation: "{other}"}},
		"unknown self":       {"GET /v1/x/{id}": {Service: "a", Operation: "b", Self: "other"}},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := scope.NewRoutes(rules); err == nil {
				t.Error("NewRoutes accepted an invalid rule")
			}
		})
	}
}

func TestRoutesNeed(t *testing.T) {
	routes := scope.DefaultRoutes()
	if _, ok, err := routes.Need("GET /v1/audit", tenantX, nil); ok || err != nil {
		t.Errorf("Need of a pattern outside the table: ok %v err %v", ok, err)
	}
	need, ok, err := routes.Need("GET /v1/agents", "", nil)
	if !ok || err != nil || need.String() != "registry:read:*" {
		t.Errorf("tenant-less Need = %s %v %v, want registry:read:*", need, ok, err)
	}
	r, ok := routes.Rule("POST /v1/agents/{agent_id}/heartbeat")
	if !ok || r.Self != "agent_id" {
		t.Errorf("heartbeat rule = %+v %v", r, ok)
	}
}
