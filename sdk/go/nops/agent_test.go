package nops_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
	"github.com/nops-kernel/nops/sdk/go/nops"
)

// seenInvocation is what a handler saw of one invocation.
type seenInvocation struct {
	id, tenant, capability string
	deadline               time.Duration // remaining at the start of the handler; 0 without one
	traceID                string        // from the context (the propagated trace)
	traceparent            string        // the header as received
}

func observed(ctx context.Context, inv *nops.Invocation) seenInvocation {
	s := seenInvocation{id: inv.ID, tenant: inv.Tenant, capability: inv.Capability, traceparent: inv.Header.Get("traceparent")}
	if d, ok := ctx.Deadline(); ok {
		s.deadline = time.Until(d)
	}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		s.traceID = sc.TraceID().String()
	}
	return s
}

// TestAgentLifecycle runs the whole life of an agent against a real kernel: register,
// heartbeats with load figures, an invocation through the kernel reaching the SDK's handler
// (headers, deadline and trace context read), idempotent re-registration, and deregistration on
// shutdown.
func TestAgentLifecycle(t *testing.T) {
	f := newFixture(t)
	var heartbeats, invocations atomic.Int64
	var lastHB atomic.Value
	hooks := nops.Hooks{
		OnHeartbeat: func(e nops.HeartbeatEvent) {
			if e.Err == nil {
				heartbeats.Add(1)
				lastHB.Store(e)
			}
		},
		OnInvocation: func(e nops.InvocationEvent) {
			if e.Capability == "echo" && e.Status == http.StatusOK {
				invocations.Add(1)
			}
		},
	}
	c := f.client(t, nops.Options{})
	var seen atomic.Value
	a, err := nops.NewAgent(c, nops.AgentConfig{
		Name: "echo-agent", Version: "1.0.0", Capacity: 8, HeartbeatInterval: 50 * time.Millisecond,
		Capabilities: []nops.Capability{echoCapability(&seen), {Name: "boom", Handle: func(context.Context, *nops.Invocation) (any, error) {
			return nil, errSecret
		}}}, Hooks: hooks,
	})
	if err != nil {
		t.Fatal(err)
	}
	stop := startAgent(t, a)
	id := a.ID()
	kerneltest.WaitFor(t, 20*time.Second, "two heartbeats", func() bool { return heartbeats.Load() >= 2 })
	if e := lastHB.Load().(nops.HeartbeatEvent); e.AgentID != id || e.Status != "healthy" || e.Free != 8 {
		t.Fatalf("last heartbeat %+v, want agent %s healthy with 8 free", e, id)
	}
	resp, body := f.k.Do(t, "GET", "/v1/agents/"+id, nil, "X-API-Key: "+f.apiKey)
	mustStatus(t, resp, body, http.StatusOK)
	ag := decode[struct {
		Status string `json:"status"`
		Load   struct {
			InFlight     *int64 `json:"in_flight"`
			FreeCapacity *int64 `json:"free_capacity"`
		} `json:"load"`
		Capabilities []struct {
			Name        string         `json:"name"`
			InputSchema map[string]any `json:"input_schema"`
		} `json:"capabilities"`
	}](t, body)
	if ag.Status != "healthy" || ag.Load.InFlight == nil || ag.Load.FreeCapacity == nil || *ag.Load.FreeCapacity != 8 {
		t.Fatalf("agent in the registry: %s", body)
	}
	if len(ag.Capabilities) != 2 || ag.Capabilities[0].Name != "echo" || ag.Capabilities[0].InputSchema["type"] != "object" {
		t.Fatalf("capabilities in the registry: %s", body)
	}

	// An invocation through the kernel, with the caller's trace context.
	const callerTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, "/v1/invoke/echo", strings.NewReader(`{"message":"hello"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Nops-Timeout-Ms", "5000")
	req.Header.Set("traceparent", "00-"+callerTrace+"-00f067aa0ba902b7-01")
	iresp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	out := new(bytes.Buffer)
	_, _ = out.ReadFrom(iresp.Body)
	_ = iresp.Body.Close()
	if iresp.StatusCode != http.StatusOK || out.String() != `{"message":"hello"}` || iresp.Header.Get("Nops-Agent-Id") != id {
		t.Fatalf("invoke: %d %s (agent %s)", iresp.StatusCode, out, iresp.Header.Get("Nops-Agent-Id"))
	}
	s := seen.Load().(seenInvocation)
	if s.id == "" || s.id != iresp.Header.Get("Nops-Invocation-Id") || s.tenant != f.tenant || s.capability != "echo" {
		t.Fatalf("handler saw %+v; invocation %s, tenant %s", s, iresp.Header.Get("Nops-Invocation-Id"), f.tenant)
	}
	if s.deadline <= 0 || s.deadline > 5*time.Second {
		t.Fatalf("handler's deadline %s, want within the 5 s the caller gave", s.deadline)
	}
	if s.traceID != callerTrace || !strings.Contains(s.traceparent, callerTrace) {
		t.Fatalf("handler's trace %q (header %q), want the caller's %s", s.traceID, s.traceparent, callerTrace)
	}
	if invocations.Load() != 1 {
		t.Fatalf("invocation hook called %d times, want 1", invocations.Load())
	}

	// Invoke through the typed helper; a bad input is refused with the fields named.
	res, err := c.Invoke(context.Background(), "echo", []byte(`{"message":"again"}`), &nops.InvokeOptions{Timeout: 3 * time.Second})
	if err != nil || string(res.Body) != `{"message":"again"}` || res.AgentID != id {
		t.Fatalf("Invoke: %+v, %v", res, err)
	}
	_, err = c.Invoke(context.Background(), "echo", []byte(`{"msg":1}`), nil)
	var pe *nops.Error
	if !errors.As(err, &pe) || pe.Status != http.StatusBadRequest || len(pe.Errors) == 0 {
		t.Fatalf("Invoke with a bad input: %v, want a 400 naming the field", err)
	}

	// The heartbeats carry the latency and error figures of the invocations served: 2 echo
	// calls answered 200, one boom call answered 500.
	if _, err := c.Invoke(context.Background(), "boom", []byte(`{}`), nil); !errors.As(err, &pe) || pe.Status < 500 {
		t.Fatalf("Invoke boom: %v, want a 5xx", err)
	}
	kerneltest.WaitFor(t, 20*time.Second, "a heartbeat with the error rate", func() bool {
		e, _ := lastHB.Load().(nops.HeartbeatEvent)
		return e.ErrorRate > 0
	})
	if e := lastHB.Load().(nops.HeartbeatEvent); e.ErrorRate != 1.0/3 || e.P95 <= 0 || e.P50 > e.P95 {
		t.Fatalf("heartbeat figures %+v, want error rate 1/3 and p50 ≤ p95 > 0", e)
	}
	resp, body = f.k.Do(t, "GET", "/v1/agents/"+id, nil, "X-API-Key: "+f.apiKey)
	mustStatus(t, resp, body, http.StatusOK)
	figs := decode[struct {
		Load struct {
			P95Ms     *float64 `json:"p95_ms"`
			ErrorRate *float64 `json:"error_rate"`
		} `json:"load"`
	}](t, body)
	if figs.Load.P95Ms == nil || *figs.Load.P95Ms <= 0 || figs.Load.ErrorRate == nil || *figs.Load.ErrorRate <= 0 {
		t.Fatalf("load in the registry: %s", body)
	}

	// Registering again under the same name updates the same agent.
	again, err := nops.NewAgent(c, nops.AgentConfig{Name: "echo-agent", Version: "1.0.1", Capabilities: []nops.Capability{echoCapability(nil)}})
	if err != nil {
		t.Fatal(err)
	}
	endpoint := decode[struct {
		Endpoint string `json:"endpoint"`
	}](t, body).Endpoint
	id2, err := again.Register(context.Background(), endpoint)
	if err != nil || id2 != id {
		t.Fatalf("register again: %s, %v; want %s", id2, err, id)
	}
	resp, body = f.k.Do(t, "GET", "/v1/agents", nil, "X-API-Key: "+f.apiKey)
	mustStatus(t, resp, body, http.StatusOK)
	list := decode[struct {
		Items []struct {
			ID      string `json:"id"`
			Version string `json:"version"`
		} `json:"items"`
	}](t, body)
	if len(list.Items) != 1 || list.Items[0].ID != id || list.Items[0].Version != "1.0.1" {
		t.Fatalf("agents after registering twice: %s", body)
	}

	// Shutdown deregisters.
	if err := stop(); err != nil {
		t.Fatalf("agent run: %v", err)
	}
	resp, body = f.k.Do(t, "GET", "/v1/agents/"+id, nil, "X-API-Key: "+f.apiKey)
	mustStatus(t, resp, body, http.StatusNotFound)
}

// TestHandlerValidation checks the handler on its own, as a caller reaching the agent directly
// would: the input schema is enforced with problem+json naming the fields, and the kernel's
// headers are checked.
func TestHandlerValidation(t *testing.T) {
	c, err := nops.NewClient(nops.Options{BaseURL: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int64
	capb := echoCapability(nil)
	inner := capb.Handle
	capb.Handle = func(ctx context.Context, inv *nops.Invocation) (any, error) {
		calls.Add(1)
		return inner(ctx, inv)
	}
	fail := nops.Capability{Name: "fail", Handle: func(context.Context, *nops.Invocation) (any, error) {
		return nil, &nops.Error{Status: http.StatusConflict, Code: "conflict", Detail: "busy"}
	}}
	crash := nops.Capability{Name: "crash", Handle: func(context.Context, *nops.Invocation) (any, error) {
		return nil, errSecret
	}}
	a, err := nops.NewAgent(c, nops.AgentConfig{Name: "v", Version: "1.0.0", Capabilities: []nops.Capability{capb, fail, crash}})
	if err != nil {
		t.Fatal(err)
	}
	h := a.Handler()
	cases := []struct {
		name, path, ctype, body string
		headers                 map[string]string
		status                  int
		field                   string
	}{
		{"valid", "/invoke/echo", "application/json", `{"message":"x"}`, nil, 200, ""},
		{"missing field", "/invoke/echo", "application/json", `{}`, nil, 400, "body"},
		{"wrong type", "/invoke/echo", "application/json", `{"message":3}`, nil, 400, "body.message"},
		{"too long", "/invoke/echo", "application/json", `{"message":"` + strings.Repeat("x", 65) + `"}`, nil, 400, "body.message"},
		{"not json", "/invoke/echo", "application/json", `{"message":`, nil, 400, "body"},
		{"not json media type", "/invoke/echo", "text/plain", `{"message":"x"}`, nil, 415, ""},
		{"unknown capability", "/invoke/nope", "application/json", `{}`, nil, 404, ""},
		{"bad timeout", "/invoke/echo", "application/json", `{"message":"x"}`, map[string]string{"Nops-Timeout-Ms": "soon"}, 400, "header.Nops-Timeout-Ms"},
		{"capability header mismatch", "/invoke/echo", "application/json", `{"message":"x"}`, map[string]string{"Nops-Capability": "other"}, 400, "header.Nops-Capability"},
		{"handler problem", "/invoke/fail", "application/json", `{}`, nil, 409, ""},
		{"handler error", "/invoke/crash", "application/json", `{}`, nil, 500, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := calls.Load()
			r := httptest.NewRequest(http.MethodPost, tc.path, strings.NewReader(tc.body))
			r.Header.Set("Content-Type", tc.ctype)
			for k, v := range tc.headers {
				r.Header.Set(k, v)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			if tc.status == 200 {
				if calls.Load() != before+1 {
					t.Fatalf("handler not called")
				}
				return
			}
			if calls.Load() != before {
				t.Fatalf("handler called for a refused invocation")
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" {
				t.Fatalf("content type %q", ct)
			}
			var p nops.Error
			if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil || p.Status != tc.status {
				t.Fatalf("problem %s: %v", w.Body, err)
			}
			if strings.Contains(w.Body.String(), errSecret.Error()) {
				t.Fatalf("the problem quotes the handler's error: %s", w.Body)
			}
			if tc.field != "" {
				found := false
				for _, fe := range p.Errors {
					found = found || fe.Name == tc.field
				}
				if !found {
					t.Fatalf("problem %s does not name %s", w.Body, tc.field)
				}
			}
		})
	}
}

type secretError struct{}

func (secretError) Error() string { return "db password hunter2 rejected" }

var errSecret = secretError{}
