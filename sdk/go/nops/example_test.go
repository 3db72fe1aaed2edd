package nops_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/nops-kernel/nops/sdk/go/nops"
)

// An agent's handler serves invocations as the kernel sends them: the input is checked against
// the capability's schema before the handler runs, and the kernel's deadline is the context's.
func ExampleAgent_Handler() {
	c, _ := nops.NewClient(nops.Options{BaseURL: "http://127.0.0.1:8080"})
	a, err := nops.NewAgent(c, nops.AgentConfig{
		Name: "greeter", Version: "1.0.0",
		Capabilities: []nops.Capability{{
			Name:        "greet",
			InputSchema: json.RawMessage(`{"type":"object","required":["name"],"properties":{"name":{"type":"string"}}}`),
			Handle: func(ctx context.Context, inv *nops.Invocation) (any, error) {
				var in struct{ Name string }
				_ = json.Unmarshal(inv.Input, &in)
				_, hasDeadline := ctx.Deadline()
				return map[string]any{"greeting": "hello " + in.Name, "invocation": inv.ID, "deadline": hasDeadline}, nil
			},
		}},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, body := range []string{`{"name":"ada"}`, `{"name":42}`} {
		r := httptest.NewRequest(http.MethodPost, "/invoke/greet", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Nops-Invocation-Id", "inv_01example")
		r.Header.Set("Nops-Timeout-Ms", "2000")
		w := httptest.NewRecorder()
		a.Handler().ServeHTTP(w, r)
		fmt.Println(w.Code, w.Header().Get("Content-Type"), strings.TrimSpace(w.Body.String()))
	}
	// Output:
	// 200 application/json {"deadline":true,"greeting":"hello ada","invocation":"inv_01example"}
	// 400 application/problem+json {"status":400,"code":"invalid","title":"Bad Request","detail":"the input does not match the capability's input schema","type":"urn:nops:problem:invalid","errors":[{"name":"body.name","reason":"got number, want string"}]}
}

// The client retries a 503 after the Retry-After the server asks for, with the same
// Idempotency-Key, and reports each retry to its hook.
func ExampleClient_Do() {
	var calls int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		if calls == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, "attempt %d, key sent: %v", calls, r.Header.Get("Idempotency-Key") != "")
	}))
	defer srv.Close()
	c, _ := nops.NewClient(nops.Options{
		BaseURL: srv.URL,
		Hooks: nops.Hooks{OnRetry: func(e nops.RetryEvent) {
			fmt.Printf("retry after %s: waiting at least 1s: %v\n", e.Reason, e.Delay >= time.Second)
		}},
	})
	req, _ := http.NewRequest(http.MethodPost, "/v1/agents", strings.NewReader(`{}`))
	resp, err := c.Do(req)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.StatusCode, string(body))
	// Output:
	// retry after 503: waiting at least 1s: true
	// 200 attempt 2, key sent: true
}

// A complete agent: it registers, heartbeats and serves until Ctrl-C, then drains its calls and
// deregisters. (Not run: it needs a kernel; see examples/echo-agent and docs/sdk-go.md.)
func ExampleAgent_Run() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	c, err := nops.NewClient(nops.Options{BaseURL: os.Getenv("NOPS_URL"), APIKey: os.Getenv("NOPS_API_KEY")})
	if err != nil {
		panic(err)
	}
	a, err := nops.NewAgent(c, nops.AgentConfig{
		Name: "echo-agent", Version: "1.0.0", Capacity: 32,
		Capabilities: []nops.Capability{{Name: "echo", Handle: func(_ context.Context, inv *nops.Invocation) (any, error) {
			return json.RawMessage(inv.Input), nil
		}}},
	})
	if err != nil {
		panic(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	if err := a.Run(ctx, ln); err != nil {
		panic(err)
	}
}

// Rotating the client's own API key: the old secret keeps working for the grace period, the
// client switches at once and confirms. (Not run: it needs a kernel.)
func ExampleClient_RotateAPIKey() {
	c, err := nops.NewClient(nops.Options{BaseURL: os.Getenv("NOPS_URL"), APIKey: os.Getenv("NOPS_API_KEY")})
	if err != nil {
		panic(err)
	}
	rot, err := c.RotateAPIKey(context.Background(), 10*time.Minute)
	if err != nil {
		panic(err)
	}
	fmt.Println("store the new key:", c.APIKey() != "", "old one retired at", rot.OldValidUntil)
}
