package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/invoke"
)

// fakeInvoker serves synchronous calls with a fixed JSON answer and keeps async invocations in
// a map, by tenant and id.
type fakeInvoker struct {
	mu        sync.Mutex
	served    []invoke.Request
	submitted []invoke.Request
	byKey     map[[2]string]invoke.Invocation
}

func newFakeInvoker() *fakeInvoker { return &fakeInvoker{byKey: map[[2]string]invoke.Invocation{}} }

func (f *fakeInvoker) Serve(_ context.Context, w http.ResponseWriter, req invoke.Request) error {
	f.mu.Lock()
	f.served = append(f.served, req)
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"sync":true}`))
	return nil
}

func (f *fakeInvoker) Submit(_ context.Context, req invoke.Request) (invoke.Invocation, error) {
	if req.Capability == "text.none" {
		return invoke.Invocation{}, errs.New(errs.NotFound, "no live agent of this tenant offers capability %q", req.Capability)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.submitted = append(f.submitted, req)
	inv := invoke.Invocation{
		ID: "inv_01jz000000000000000000000" + string(rune('a'+len(f.submitted))), TenantID: req.TenantID,
		Capability: req.Capability, Status: invoke.StatusPending,
		CreatedAt: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC), ExpiresAt: time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC),
	}
	f.byKey[[2]string{req.TenantID, inv.ID}] = inv
	return inv, nil
}

func (f *fakeInvoker) Invocation(_ context.Context, tenantID, id string) (invoke.Invocation, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	inv, ok := f.byKey[[2]string{tenantID, id}]
	if !ok {
		return invoke.Invocation{}, errs.New(errs.NotFound, "invocation %s not found", id)
	}
	return inv, nil
}

func (f *fakeInvoker) put(inv invoke.Invocation) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.byKey[[2]string{inv.TenantID, inv.ID}] = inv
}

func newInvokeWorld(t *testing.T) (*eventsWorld, *fakeInvoker) {
	t.Helper()
	fi := newFakeInvoker()
	w := newEventsWorld(t, func(d *Deps) { d.Invoke = fi })
	return w, fi
}

func TestInvokePreferRespondAsync(t *testing.T) {
	w, fi := newInvokeWorld(t)
	admin := w.keys["ADMIN"]
	body := map[string]any{"text": "hi"}

	h, out := w.must(202, "POST", "/v1/invoke/text.echo", admin, body, "Prefer", "respond-async", "Idempotency-Key", "k1")
	id, _ := out["id"].(string)
	if diff := cmp.Diff(map[string]any{"id": id, "status": "pending", "capability": "text.echo", "created_at": "2026-03-01T12:00:00Z"}, out); diff != "" {
		t.Fatalf("202 body (-want +got):\n%s", diff)
	}
	if h.Get("Location") != "/v1/invocations/"+id || h.Get("Preference-Applied") != "respond-async" || h.Get("Nops-Invocation-Id") != id {
		t.Fatalf("202 headers %v", h)
	}
	fi.mu.Lock()
	got := fi.submitted[0]
	fi.mu.Unlock()
	if got.TenantID != w.a || got.Capability != "text.echo" || string(got.Body) != `{"text":"hi"}` || got.RequestID == "" ||
		got.Header.Get("Idempotency-Key") != "k1" {
		t.Fatalf("submitted %+v", got)
	}

	// The preference is found among others, in any case, in any Prefer field; anything else
	// is a synchronous call.
	for _, prefer := range []string{"wait=10, respond-async", "RESPOND-ASYNC", `handling=lenient; x="a,b", respond-async;foo`} {
		w.must(202, "POST", "/v1/invoke/text.echo", admin, body, "Prefer", prefer)
	}
	for _, prefer := range []string{"return=minimal", "respond-async-later", `x="respond-async"`, "respond-async=", "wait=5 respond-async"} {
		_, out := w.must(200, "POST", "/v1/invoke/text.echo", admin, body, "Prefer", prefer)
		if out["sync"] != true {
			t.Errorf("Prefer %q: %v, want the synchronous answer", prefer, out)
		}
	}
	fi.mu.Lock()
	nSubmitted, nServed := len(fi.submitted), len(fi.served)
	fi.mu.Unlock()
	if nSubmitted != 4 || nServed != 5 {
		t.Fatalf("%d submitted, %d served; want 4 and 5", nSubmitted, nServed)
	}

	// The engine's refusals are problems; a viewer may not invoke at all.
	_, p := w.must(404, "POST", "/v1/invoke/text.none", admin, body, "Prefer", "respond-async")
	if p["code"] != "not_found" {
		t.Errorf("problem %v", p)
	}
	w.must(403, "POST", "/v1/invoke/text.echo", w.keys["VIEWER"], body, "Prefer", "respond-async")

	// A SUPER_ADMIN names the tenant, and the Location keeps it.
	h, _ = w.must(202, "POST", "/v1/invoke/text.echo?tenant="+w.a, w.admin, body, "Prefer", "respond-async")
	if loc := h.Get("Location"); !strings.HasSuffix(loc, "?tenant="+w.a) {
		t.Fatalf("Location %q does not name the tenant", loc)
	}
	w.must(200, "GET", h.Get("Location"), w.admin, nil)
}

func TestGetInvocation(t *testing.T) {
	w, fi := newInvokeWorld(t)
	admin := w.keys["ADMIN"]
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	base := invoke.Invocation{
		TenantID: w.a, Capability: "text.echo", Status: invoke.StatusCompleted, AgentID: "agt_01jz0000000000000000000001",
		Attempts: 1, CreatedAt: at, StartedAt: at.Add(time.Second), CompletedAt: at.Add(2 * time.Second),
		ExpiresAt: at.Add(24 * time.Hour), ResponseStatus: 200,
	}
	with := func(id, ct string, body []byte) invoke.Invocation {
		inv := base
		inv.ID, inv.ResponseContentType, inv.ResponseBody = id, ct, body
		return inv
	}
	for _, inv := range []invoke.Invocation{
		with("inv_json", "application/json; charset=utf-8", []byte(`{"echo":[1,"two"]}`)),
		with("inv_problem", "application/problem+json", []byte(`{"title":"x"}`)),
		with("inv_badjson", "application/json", []byte(`{"echo":`)),
		with("inv_text", "text/plain", []byte("héllo")),
		with("inv_bytes", "application/octet-stream", []byte{0xff, 0x00, 0x01}),
		with("inv_empty", "", nil),
		{ID: "inv_pending", TenantID: w.a, Capability: "text.echo", Status: invoke.StatusPending, CreatedAt: at, ExpiresAt: at.Add(time.Hour)},
		{ID: "inv_failed", TenantID: w.a, Capability: "text.echo", Status: invoke.StatusFailed, Attempts: 2, CreatedAt: at,
			CompletedAt: at.Add(time.Minute), ExpiresAt: at.Add(time.Hour), ErrorStatus: 504, ErrorDetail: "no answer from an agent within the call's deadline"},
	} {
		fi.put(inv)
	}
	// A JSON answer is the value itself, text a string, other bytes base64.
	get := func(id string) map[string]any {
		t.Helper()
		_, out := w.must(200, "GET", "/v1/invocations/"+id, admin, nil)
		return out
	}
	resp := func(out map[string]any) map[string]any { r, _ := out["response"].(map[string]any); return r }
	out := get("inv_json")
	if diff := cmp.Diff(map[string]any{
		"id": "inv_json", "capability": "text.echo", "status": "completed", "agent_id": base.AgentID, "attempts": 1.0,
		"created_at": "2026-03-01T12:00:00Z", "started_at": "2026-03-01T12:00:01Z", "completed_at": "2026-03-01T12:00:02Z",
		"expires_at": "2026-03-02T12:00:00Z",
		"response":   map[string]any{"status": 200.0, "content_type": "application/json; charset=utf-8", "body": map[string]any{"echo": []any{1.0, "two"}}},
	}, out); diff != "" {
		t.Fatalf("JSON answer (-want +got):\n%s", diff)
	}
	if b := resp(get("inv_problem"))["body"]; !cmp.Equal(b, map[string]any{"title": "x"}) {
		t.Errorf("+json answer body %v", b)
	}
	for id, want := range map[string]any{"inv_badjson": `{"echo":`, "inv_text": "héllo", "inv_bytes": "/wAB"} {
		r := resp(get(id))
		if r["body"] != want {
			t.Errorf("%s body %#v, want %#v", id, r["body"], want)
		}
		if _, b64 := r["body_encoding"]; b64 != (id == "inv_bytes") {
			t.Errorf("%s body_encoding %v", id, r["body_encoding"])
		}
	}
	if r := resp(get("inv_empty")); r["body"] != nil || r["content_type"] != nil || r["status"] != 200.0 {
		t.Errorf("empty answer %v", r)
	}
	out = get("inv_pending")
	if out["status"] != "pending" || out["response"] != nil || out["error"] != nil || out["agent_id"] != nil || out["completed_at"] != nil {
		t.Errorf("pending %v", out)
	}
	out = get("inv_failed")
	if !cmp.Equal(out["error"], map[string]any{"status": 504.0, "detail": "no answer from an agent within the call's deadline"}) || out["response"] != nil {
		t.Errorf("failed %v", out)
	}

	// Tenant isolation: another tenant's caller, and a SUPER_ADMIN naming the other tenant, get
	// 404; the SUPER_ADMIN must name a tenant; a viewer may not read invocations.
	w.must(404, "GET", "/v1/invocations/inv_json", w.otherAdmin, nil)
	w.must(404, "GET", "/v1/invocations/inv_json?tenant="+w.b, w.admin, nil)
	w.must(200, "GET", "/v1/invocations/inv_json?tenant="+w.a, w.admin, nil)
	w.must(400, "GET", "/v1/invocations/inv_json", w.admin, nil)
	w.must(403, "GET", "/v1/invocations/inv_json", w.keys["VIEWER"], nil)
	w.must(404, "GET", "/v1/invocations/inv_nope", admin, nil)
	w.must(401, "GET", "/v1/invocations/inv_json", "", nil)
}

func TestBodyOut(t *testing.T) {
	for _, tc := range []struct {
		ct     string
		body   string
		want   string
		base64 bool
	}{
		{"application/json", `[1, 2]`, `[1,2]`, false},
		{"application/vnd.api+json", `{"a":1}`, `{"a":1}`, false},
		{"APPLICATION/JSON; charset=UTF-8", `"s"`, `"s"`, false},
		{"application/json", `nope`, `"nope"`, false},
		{"text/json-ish", `{"a":1}`, `"{\"a\":1}"`, false},
		{"", "plain", `"plain"`, false},
		{"text/plain", "\xc3\x28", `"wyg="`, true},
	} {
		v, b64 := bodyOut(tc.ct, []byte(tc.body))
		got, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != tc.want || b64 != tc.base64 {
			t.Errorf("bodyOut(%q, %q) = %s, %v; want %s, %v", tc.ct, tc.body, got, b64, tc.want, tc.base64)
		}
	}
	if v, _ := bodyOut("application/json", nil); v != nil {
		t.Errorf("empty body: %v, want none", v)
	}
}
