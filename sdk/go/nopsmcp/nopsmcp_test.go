package nopsmcp_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
	"github.com/nops-kernel/nops/sdk/go/nopsmcp"
)

// fleet is a kernel with a tenant, an ADMIN API key and an approved echo agent.
type fleet struct {
	k      *kerneltest.Kernel
	tenant string
	key    string
	mu     sync.Mutex
	agent  http.Header // headers of the agent's last request
}

func (f *fleet) lastAgentHeader() http.Header {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.agent
}

func do(t *testing.T, k *kerneltest.Kernel, method, path string, body any, want int, headers ...string) []byte {
	t.Helper()
	resp, b := k.Do(t, method, path, body, headers...)
	if resp.StatusCode != want {
		t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	return b
}

func newFleet(t *testing.T) *fleet {
	t.Helper()
	f := &fleet{k: kerneltest.Start(t)}
	admin := "Authorization: Bearer " + f.k.Token(t, "")
	var id struct {
		ID     string `json:"id"`
		Secret string `json:"secret"`
	}
	_ = json.Unmarshal(do(t, f.k, "POST", "/v1/tenants", map[string]string{"name": "acme", "display_name": "Acme"}, http.StatusCreated, admin), &id)
	f.tenant = id.ID
	_ = json.Unmarshal(do(t, f.k, "POST", "/v1/api-keys?tenant="+f.tenant, map[string]string{"name": "caller", "role": "ADMIN"}, http.StatusCreated, admin), &id)
	f.key = id.Secret
	agent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.agent = r.Header.Clone()
		f.mu.Unlock()
		b, _ := io.ReadAll(r.Body)
		if strings.Contains(string(b), "fail") {
			w.WriteHeader(http.StatusUnprocessableEntity)
			_, _ = io.WriteString(w, `{"error":"cannot"}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"echo":`+string(b)+`}`)
	}))
	t.Cleanup(agent.Close)
	do(t, f.k, "POST", "/v1/agents", map[string]any{
		"name": "echo", "version": "1.0.0", "endpoint": agent.URL,
		"capabilities": []any{map[string]any{"name": "text.echo", "description": "Echo.", "input_schema": map[string]any{"type": "object"}}},
	}, http.StatusCreated, "X-API-Key: "+f.key)
	var tools struct {
		Items []struct {
			Name, Hash string
		} `json:"items"`
	}
	_ = json.Unmarshal(do(t, f.k, "GET", "/v1/mcp/tools", nil, http.StatusOK, "X-API-Key: "+f.key), &tools)
	if len(tools.Items) != 1 {
		t.Fatalf("tools %+v", tools)
	}
	do(t, f.k, "POST", "/v1/mcp/tools/text.echo/approval", map[string]string{"hash": tools.Items[0].Hash}, http.StatusOK, "X-API-Key: "+f.key)
	return f
}

func TestClientListsAndCallsThroughTheKernel(t *testing.T) {
	f := newFleet(t)
	ctx := context.Background()
	c, err := nopsmcp.Connect(ctx, f.k.URL+"/", nopsmcp.Options{APIKey: f.key, Name: "test-agent", Version: "1.2.3"})
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	defer c.Close()
	tools, err := c.Tools(ctx)
	if err != nil {
		t.Fatalf("Tools: %v", err)
	}
	var names []string
	for _, tl := range tools {
		names = append(names, tl.Name)
	}
	if !slices.Contains(names, "text.echo") || !slices.Contains(names, "kernel.listAgents") {
		t.Fatalf("tools %v", names)
	}
	var out struct {
		Echo struct {
			Text string `json:"text"`
		} `json:"echo"`
	}
	if err := c.CallJSON(ctx, "text.echo", map[string]string{"text": "hi"}, &out); err != nil || out.Echo.Text != "hi" {
		t.Fatalf("CallJSON: %+v, %v", out, err)
	}
	if h := f.lastAgentHeader(); h.Get("X-Api-Key") != "" || h.Get("Authorization") != "" || h.Get("Nops-Capability") != "text.echo" {
		t.Fatalf("agent request headers: %v", h)
	}
	// The agent's 4xx answer is a ToolError with its text.
	var te *nopsmcp.ToolError
	if err := c.CallJSON(ctx, "text.echo", map[string]string{"text": "fail"}, nil); !errors.As(err, &te) || te.Tool != "text.echo" || !strings.Contains(te.Message, "cannot") {
		t.Fatalf("CallJSON of a failing call: %v", err)
	}
	// An unknown tool is an error of the call itself.
	if _, err := c.Call(ctx, "text.unknown", nil); err == nil {
		t.Fatal("Call of an unknown tool succeeded")
	}
}

func TestClientWithATokenSourceNamesTheTenant(t *testing.T) {
	f := newFleet(t)
	ctx := context.Background()
	var calls atomic.Int32
	c, err := nopsmcp.Connect(ctx, f.k.URL, nopsmcp.Options{Tenant: f.tenant, TokenSource: func(context.Context) (string, error) {
		calls.Add(1)
		return f.k.Token(t, ""), nil
	}})
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	defer c.Close()
	if err := c.CallJSON(ctx, "text.echo", map[string]string{"text": "x"}, nil); err != nil {
		t.Fatalf("CallJSON as SUPER_ADMIN in the tenant: %v", err)
	}
	if n := calls.Load(); n < 2 {
		t.Fatalf("token source called %d times, want once per request", n)
	}
}

func TestConnectRefusals(t *testing.T) {
	ctx := context.Background()
	if _, err := nopsmcp.Connect(ctx, "http://127.0.0.1:1", nopsmcp.Options{}); err == nil {
		t.Fatal("Connect without a credential succeeded")
	}
	if _, err := nopsmcp.Connect(ctx, "not a url", nopsmcp.Options{APIKey: "k"}); err == nil {
		t.Fatal("Connect to a relative URL succeeded")
	}
	k := kerneltest.Start(t)
	if _, err := nopsmcp.Connect(ctx, k.URL, nopsmcp.Options{APIKey: "nops_wrong"}); err == nil {
		t.Fatal("Connect with a wrong key succeeded")
	}
}
