package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/events"
	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
)

// invocationDoc is GET /v1/invocations/{id}'s body.
type invocationDoc struct {
	ID         string `json:"id"`
	Capability string `json:"capability"`
	Status     string `json:"status"`
	AgentID    string `json:"agent_id"`
	Attempts   int    `json:"attempts"`
	Response   *struct {
		Status       int             `json:"status"`
		ContentType  string          `json:"content_type"`
		Body         json.RawMessage `json:"body"`
		BodyEncoding string          `json:"body_encoding"`
	} `json:"response"`
	Error *struct {
		Status int    `json:"status"`
		Detail string `json:"detail"`
	} `json:"error"`
}

// submitAsync invokes capability with Prefer: respond-async and returns the 202's Location and
// the request id it was served under.
func submitAsync(t *testing.T, k *kerneltest.Kernel, auth, capability string, body any) (location, requestID string) {
	t.Helper()
	resp, b := k.Do(t, "POST", "/v1/invoke/"+capability, body, auth, "Prefer: wait=5, respond-async")
	mustStatus(t, resp, b, http.StatusAccepted)
	acc := decode[struct {
		ID, Status, Capability string
		CreatedAt              time.Time `json:"created_at"`
	}](t, b)
	if acc.Status != "pending" || acc.Capability != capability || acc.CreatedAt.IsZero() {
		t.Fatalf("202 body %s", b)
	}
	if resp.Header.Get("Location") != "/v1/invocations/"+acc.ID || resp.Header.Get("Preference-Applied") != "respond-async" {
		t.Fatalf("202 headers %v", resp.Header)
	}
	return resp.Header.Get("Location"), resp.Header.Get("X-Request-Id")
}

// awaitInvocation polls location until the invocation is finished.
func awaitInvocation(t *testing.T, k *kerneltest.Kernel, auth, location string) invocationDoc {
	t.Helper()
	var doc invocationDoc
	pollUntil(t, 30*time.Second, "invocation "+location+" finished", func() bool {
		resp, b := k.Do(t, "GET", location, nil, auth)
		mustStatus(t, resp, b, http.StatusOK)
		doc = decode[invocationDoc](t, b)
		return doc.Status == "completed" || doc.Status == "failed"
	})
	return doc
}

// invocationEvents returns, from the bus, the invocation.completed events of invocation id and
// the billing.usage events of request id.
func invocationEvents(t *testing.T, k *kerneltest.Kernel, id, requestID string) (completed []events.InvocationCompleted, usage []events.BillingUsage) {
	t.Helper()
	for _, e := range streamEvents(t, k) {
		p, err := e.Payload()
		if err != nil {
			t.Fatalf("event %s: %v", e.ID, err)
		}
		switch v := p.(type) {
		case events.InvocationCompleted:
			if v.InvocationID == id {
				completed = append(completed, v)
			}
		case events.BillingUsage:
			if v.RequestID == requestID && v.Source == events.UsageSourceInvocation {
				usage = append(usage, v)
			}
		}
	}
	return completed, usage
}

func TestInvokeAsync(t *testing.T) {
	f := newFixture(t)
	k, admin := f.k, f.keys["ADMIN"]
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"echo":`+string(b)+`,"key":"`+r.Header.Get("Idempotency-Key")+`"}`)
	}))
	defer echo.Close()
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, "model crashed")
	}))
	defer failing.Close()
	echoID := invokeAgent(t, k, admin, "echo", echo.URL, "text.echo", nil)
	invokeAgent(t, k, admin, "failing", failing.URL, "text.fail", nil)

	// Accepted at once, delivered through the bus, the result readable at the Location.
	loc, reqID := submitAsync(t, k, admin, "text.echo", map[string]string{"text": "hi"})
	doc := awaitInvocation(t, k, admin, loc)
	if doc.Status != "completed" || doc.AgentID != echoID || doc.Attempts != 1 || doc.Error != nil || doc.Response == nil {
		t.Fatalf("invocation %+v", doc)
	}
	if doc.Response.Status != 200 || doc.Response.ContentType != "application/json" || doc.Response.BodyEncoding != "" {
		t.Fatalf("response %+v", doc.Response)
	}
	var gotBody, wantBody any
	_ = json.Unmarshal(doc.Response.Body, &gotBody)
	_ = json.Unmarshal([]byte(`{"echo":{"text":"hi"},"key":""}`), &wantBody)
	if diff := cmp.Diff(wantBody, gotBody); diff != "" {
		t.Fatalf("the result is not the agent's answer (-want +got):\n%s", diff)
	}

	// The invocation.completed and billing.usage events reach the bus, once each.
	var completed []events.InvocationCompleted
	var usage []events.BillingUsage
	pollUntil(t, 30*time.Second, "invocation events on the bus", func() bool {
		completed, usage = invocationEvents(t, k, doc.ID, reqID)
		return len(completed) > 0 && len(usage) > 0
	})
	if len(completed) != 1 || len(usage) != 1 {
		t.Fatalf("%d invocation.completed and %d billing.usage events, want one each", len(completed), len(usage))
	}
	c := completed[0]
	if !c.Async || c.Tenant != f.tenant || c.AgentID != echoID || c.Status != 200 || c.Outcome != "ok" || c.RequestBytes != 13 || c.Attempts != 1 {
		t.Errorf("invocation.completed %+v", c)
	}
	if u := usage[0]; u.Tenant != f.tenant || u.AgentID != echoID || u.Capability != "text.echo" || u.Status != 200 {
		t.Errorf("billing.usage %+v", u)
	}

	// Another tenant's caller, and a viewer, do not read it.
	other := newTenant(t, k, f.admin, "other")
	_, otherKey := newKey(t, k, f.admin, other, "ADMIN", nil)
	resp, b := k.Do(t, "GET", loc, nil, otherKey)
	wantProblem(t, resp, b, http.StatusNotFound, "not_found", "")
	resp, b = k.Do(t, "GET", loc, nil, f.keys["VIEWER"])
	mustStatus(t, resp, b, http.StatusForbidden)
	resp, b = k.Do(t, "GET", loc+"?tenant="+f.tenant, nil, f.admin)
	mustStatus(t, resp, b, http.StatusOK)

	// A failing agent: failed, with the error and the agent's answer.
	loc, _ = submitAsync(t, k, admin, "text.fail", map[string]string{})
	doc = awaitInvocation(t, k, admin, loc)
	if doc.Status != "failed" || doc.Error == nil || doc.Error.Status != 500 || doc.Error.Detail == "" {
		t.Fatalf("failed invocation %+v", doc)
	}
	if doc.Response == nil || string(doc.Response.Body) != `"model crashed"` {
		t.Fatalf("failed invocation's response %+v", doc.Response)
	}

	// No live agent: refused at submission.
	resp, b = k.Do(t, "POST", "/v1/invoke/text.none", map[string]string{}, admin, "Prefer: respond-async")
	wantProblem(t, resp, b, http.StatusNotFound, "not_found", "no live agent")

	// The same Idempotency-Key again is the same invocation; the key reaches the agent.
	resp, b = k.Do(t, "POST", "/v1/invoke/text.echo", map[string]string{"text": "once"}, admin, "Prefer: respond-async", "Idempotency-Key: e2e-1")
	mustStatus(t, resp, b, http.StatusAccepted)
	first := resp.Header.Get("Location")
	resp, b = k.Do(t, "POST", "/v1/invoke/text.echo", map[string]string{"text": "once"}, admin, "Prefer: respond-async", "Idempotency-Key: e2e-1")
	mustStatus(t, resp, b, http.StatusAccepted)
	if resp.Header.Get("Location") != first {
		t.Fatalf("a retried submission went to %s, want %s", resp.Header.Get("Location"), first)
	}
	doc = awaitInvocation(t, k, admin, first)
	if doc.Response == nil || !json.Valid(doc.Response.Body) || !jsonHas(doc.Response.Body, "key", "e2e-1") {
		t.Fatalf("idempotent invocation %+v", doc.Response)
	}
}

// jsonHas reports whether the JSON object b has member name with the string value want.
func jsonHas(b []byte, name, want string) bool {
	var m map[string]any
	return json.Unmarshal(b, &m) == nil && m[name] == want
}

// TestInvokeSyncEmitsCompletionEvents: a synchronous call emits exactly one invocation.completed
// and one billing.usage event.
func TestInvokeSyncEmitsCompletionEvents(t *testing.T) {
	f := newFixture(t)
	k, admin := f.k, f.keys["ADMIN"]
	agent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	defer agent.Close()
	id := invokeAgent(t, k, admin, "sync", agent.URL, "text.sync", nil)
	resp, b := k.Do(t, "POST", "/v1/invoke/text.sync", map[string]string{"a": "b"}, admin)
	mustStatus(t, resp, b, http.StatusOK)
	inv, reqID := resp.Header.Get("Nops-Invocation-Id"), resp.Header.Get("X-Request-Id")
	var completed []events.InvocationCompleted
	var usage []events.BillingUsage
	pollUntil(t, 30*time.Second, "invocation events on the bus", func() bool {
		completed, usage = invocationEvents(t, k, inv, reqID)
		return len(completed) > 0 && len(usage) > 0
	})
	if len(completed) != 1 || len(usage) != 1 {
		t.Fatalf("%d invocation.completed and %d billing.usage events, want one each", len(completed), len(usage))
	}
	if c := completed[0]; c.Async || c.AgentID != id || c.Status != 200 || c.Outcome != "ok" || c.ResponseBytes != 11 || c.RequestID != reqID {
		t.Errorf("invocation.completed %+v", c)
	}
}
