package e2e

import (
	"bufio"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
)

// invokeAgent registers an agent of the fixture's tenant at endpoint offering capability, with
// an optional input schema, and returns its id.
func invokeAgent(t *testing.T, k *kerneltest.Kernel, auth, name, endpoint, capability string, schema map[string]any) string {
	t.Helper()
	c := map[string]any{"name": capability}
	if schema != nil {
		c["input_schema"] = schema
	}
	resp, body := k.Do(t, "POST", "/v1/agents", map[string]any{
		"name": name, "version": "1.0.0", "endpoint": endpoint, "capabilities": []any{c},
	}, auth)
	mustStatus(t, resp, body, http.StatusCreated)
	return decode[agentDoc](t, body).ID
}

func TestInvokeRelaysTheAgentsAnswer(t *testing.T) {
	f := newFixture(t)
	k, admin := f.k, f.keys["ADMIN"]
	var got http.Header
	var hits atomic.Int32
	agent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		got = r.Header.Clone()
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"echo":`+string(b)+`}`)
	}))
	defer agent.Close()
	id := invokeAgent(t, k, admin, "echo", agent.URL, "text.echo", map[string]any{
		"type": "object", "required": []string{"text"}, "properties": map[string]any{"text": map[string]any{"type": "string"}},
	})

	resp, body := k.Do(t, "POST", "/v1/invoke/text.echo", map[string]string{"text": "hi"}, admin)
	mustStatus(t, resp, body, http.StatusOK)
	if string(body) != `{"echo":{"text":"hi"}}` || resp.Header.Get("Nops-Agent-Id") != id || resp.Header.Get("Nops-Invocation-Id") == "" {
		t.Fatalf("answer %s headers %v", body, resp.Header)
	}
	if got.Get("X-Api-Key") != "" || got.Get("Authorization") != "" {
		t.Errorf("the caller's credentials reached the agent: %v", got)
	}
	if got.Get("Nops-Tenant") != f.tenant || got.Get("Nops-Timeout-Ms") == "" || got.Get("X-Request-Id") == "" {
		t.Errorf("agent headers %v", got)
	}

	// Input outside the capability's schema never reaches the agent.
	resp, body = k.Do(t, "POST", "/v1/invoke/text.echo", map[string]any{"text": 3}, admin)
	p := wantProblem(t, resp, body, http.StatusBadRequest, "invalid", "input schema")
	if len(p.Errors) == 0 || p.Errors[0].Name != "body.text" {
		t.Errorf("problem fields %+v", p.Errors)
	}
	if hits.Load() != 1 {
		t.Errorf("agent hits %d, want 1", hits.Load())
	}

	// No agent offers it.
	resp, body = k.Do(t, "POST", "/v1/invoke/text.other", map[string]string{}, admin)
	wantProblem(t, resp, body, http.StatusNotFound, "not_found", "no live agent")

	// A viewer may not invoke; another tenant's caller does not see this tenant's agents.
	resp, body = k.Do(t, "POST", "/v1/invoke/text.echo", map[string]string{"text": "x"}, f.keys["VIEWER"])
	mustStatus(t, resp, body, http.StatusForbidden)
	other := newTenant(t, k, f.admin, "other")
	_, otherKey := newKey(t, k, f.admin, other, "ADMIN", nil)
	resp, body = k.Do(t, "POST", "/v1/invoke/text.echo", map[string]string{"text": "x"}, otherKey)
	mustStatus(t, resp, body, http.StatusNotFound)
	if hits.Load() != 1 {
		t.Errorf("agent hits %d after refused calls, want 1", hits.Load())
	}
}

func TestInvokeEgressIsChecked(t *testing.T) {
	// Production-like egress: loopback and private ranges refused.
	f := newFixture(t, func(c *config.Config) { c.Egress.AllowLoopback = "false" })
	k, admin := f.k, f.keys["ADMIN"]
	var hits atomic.Int32
	agent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer agent.Close()
	port := agent.URL[strings.LastIndex(agent.URL, ":"):]

	// An address literal the policy refuses is refused at registration: 400 naming the field.
	for _, tt := range []struct{ name, endpoint, reason string }{
		{"metadata", "http://169.254.169.254/latest", "metadata"},
		{"private", "http://10.0.0.7" + port, "private"},
		{"loopback", agent.URL, "loopback"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := k.Do(t, "POST", "/v1/agents", map[string]any{
				"name": tt.name, "version": "1.0.0", "endpoint": tt.endpoint,
				"capabilities": []any{map[string]any{"name": "cap." + tt.name}},
			}, admin)
			p := wantProblem(t, resp, body, http.StatusBadRequest, "invalid", "")
			if len(p.Errors) != 1 || p.Errors[0].Name != "body.endpoint" || !strings.Contains(p.Errors[0].Reason, tt.reason) {
				t.Errorf("problem fields %+v, want body.endpoint naming %q", p.Errors, tt.reason)
			}
		})
	}

	// A host name is checked when it is dialled, whatever it resolved to at registration.
	t.Run("rebinding", func(t *testing.T) {
		invokeAgent(t, k, admin, "rebinding", "http://localhost"+port, "cap.rebinding", nil)
		resp, body := k.Do(t, "POST", "/v1/invoke/cap.rebinding", map[string]string{}, admin)
		wantProblem(t, resp, body, http.StatusBadGateway, "bad_gateway", "egress")
		recs := auditRecords(t, k, f.admin, "tenant="+f.tenant+"&action=invoke.egress_refused")
		found := false
		for _, r := range recs.Items {
			if strings.Contains(r.Decision.Reason, "loopback") {
				found = true
			}
		}
		if !found {
			t.Errorf("no audit record naming loopback: %+v", recs.Items)
		}
	})
	if hits.Load() != 0 {
		t.Errorf("a refused agent was contacted %d times", hits.Load())
	}
}

func TestInvokeStreamsThroughTheKernel(t *testing.T) {
	f := newFixture(t)
	k, admin := f.k, f.keys["ADMIN"]
	release := make(chan struct{})
	agent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "data: second\n\n")
	}))
	defer agent.Close()
	invokeAgent(t, k, admin, "streamer", agent.URL, "text.stream", nil)

	// A plain client: the contract-checking one reads whole bodies.
	req, err := http.NewRequest("POST", k.URL+"/v1/invoke/text.stream", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	name, value, _ := strings.Cut(admin, ":")
	req.Header.Set(name, strings.TrimSpace(value))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	rd := bufio.NewReader(resp.Body)
	line, err := rd.ReadString('\n')
	if err != nil || line != "data: first\n" {
		t.Fatalf("the first event did not arrive before the agent finished: %q %v", line, err)
	}
	close(release)
	rest, _ := io.ReadAll(rd)
	if !strings.Contains(string(rest), "data: second") {
		t.Errorf("rest of the stream %q", rest)
	}
}
