package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"golang.org/x/crypto/bcrypt"

	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/kernel"
)

const password = "bench-admin-password-0123"

// callBody is the input of every call, the same for each kind.
const callBody = `{"n":1,"text":"benchmark"}`

// bench is a running kernel with a tenant, an ADMIN API key and an approved agent offering
// bench.echo.
type bench struct {
	base  string // http://<kernel>
	key   string // X-API-Key
	hc    *http.Client
	close func()
}

func startBench(ctx context.Context) (*bench, error) {
	dir, err := os.MkdirTemp("", "nops-bench-mcp-")
	if err != nil {
		return nil, err
	}
	cleanup := []func(){func() { _ = os.RemoveAll(dir) }}
	closeAll := func() {
		for i := len(cleanup) - 1; i >= 0; i-- {
			cleanup[i]()
		}
	}
	fail := func(err error) (*bench, error) { closeAll(); return nil, err }

	agentLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	reply := `{"ok":true,"result":"` + strings.Repeat("x", 160) + `"}`
	agent := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", fmt.Sprint(len(reply)))
		_, _ = io.WriteString(w, reply)
	})}
	go func() { _ = agent.Serve(agentLn) }()
	cleanup = append(cleanup, func() { _ = agent.Close() })

	cfg := config.Default()
	cfg.DataDir, cfg.HTTP.Addr = dir, "127.0.0.1:0"
	cfg.Auth.BootstrapAdminPassword = password
	cfg.Log.Level = "error"
	// Nothing refused for volume: no per-IP rate limit, caps far above the load.
	cfg.Limits.PerIP = ""
	cfg.Limits.InFlightPerIP, cfg.Limits.InFlightMax, cfg.Limits.InFlightPerTenant = 100000, 100000, 100000
	cfg.Limits.MaxConnsPerIP, cfg.Limits.MaxConns = 100000, 100000
	k, err := kernel.New(ctx, cfg, kernel.Options{Logger: slog.New(slog.DiscardHandler), Out: io.Discard, Version: "bench", Commit: "bench", BcryptCost: bcrypt.MinCost})
	if err != nil {
		return fail(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- k.Run(rctx) }()
	cleanup = append(cleanup, func() {
		cancel()
		<-done
		_ = k.Close()
	})
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 1024
	b := &bench{base: "http://" + k.Addr(), hc: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
	cleanup = append(cleanup, tr.CloseIdleConnections)
	b.close = closeAll
	if err := b.enrol(ctx, "http://"+agentLn.Addr().String()); err != nil {
		return fail(err)
	}
	return b, nil
}

// api sends a JSON request and decodes a 2xx answer into out.
func (b *bench) api(ctx context.Context, method, path string, in, out any, headers ...string) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, method, b.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	for _, h := range headers {
		name, value, _ := strings.Cut(h, ":")
		req.Header.Set(strings.TrimSpace(name), strings.TrimSpace(value))
	}
	resp, err := b.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, rb)
	}
	if out != nil {
		return json.Unmarshal(rb, out)
	}
	return nil
}

// enrol creates the tenant, the ADMIN key and the agent, and approves its tool.
func (b *bench) enrol(ctx context.Context, agentURL string) error {
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := b.api(ctx, "POST", "/v1/auth/token", map[string]string{"username": "admin", "password": password}, &tok); err != nil {
		return err
	}
	admin := "Authorization: Bearer " + tok.AccessToken
	var tn struct {
		ID string `json:"id"`
	}
	if err := b.api(ctx, "POST", "/v1/tenants", map[string]string{"name": "bench", "display_name": "Bench"}, &tn, admin); err != nil {
		return err
	}
	var key struct {
		Secret string `json:"secret"`
	}
	if err := b.api(ctx, "POST", "/v1/api-keys?tenant="+tn.ID, map[string]string{"name": "bench", "role": "ADMIN"}, &key, admin); err != nil {
		return err
	}
	b.key = key.Secret
	auth := "X-API-Key: " + b.key
	schema := map[string]any{"type": "object", "properties": map[string]any{"n": map[string]any{"type": "integer"}, "text": map[string]any{"type": "string"}}}
	if err := b.api(ctx, "POST", "/v1/agents", map[string]any{
		"name": "echo", "version": "1.0.0", "endpoint": agentURL,
		"capabilities": []any{map[string]any{"name": "bench.echo", "description": "Answer a small JSON document.", "input_schema": schema}},
	}, nil, auth); err != nil {
		return err
	}
	var tools struct {
		Items []struct {
			Name string `json:"name"`
			Hash string `json:"hash"`
		} `json:"items"`
	}
	if err := b.api(ctx, "GET", "/v1/mcp/tools", nil, &tools, auth); err != nil {
		return err
	}
	if len(tools.Items) != 1 {
		return fmt.Errorf("tools %+v, want bench.echo", tools.Items)
	}
	return b.api(ctx, "POST", "/v1/mcp/tools/bench.echo/approval", map[string]string{"hash": tools.Items[0].Hash}, nil, auth)
}

// callers returns n callers of kind and what closes them.
func (b *bench) callers(ctx context.Context, kind string, n int) ([]caller, func(), error) {
	out := make([]caller, 0, n)
	var closers []func()
	closeAll := func() {
		for _, c := range closers {
			c()
		}
	}
	for range n {
		switch kind {
		case "invoke":
			out = append(out, b.post("/v1/invoke/bench.echo", callBody, func(resp *http.Response, body []byte) error {
				if resp.StatusCode != http.StatusOK {
					return fmt.Errorf("invoke: %d %s", resp.StatusCode, body)
				}
				return nil
			}))
		case "mcp-raw":
			rpc := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"bench.echo","arguments":` + callBody + `}}`
			out = append(out, b.post("/mcp", rpc, func(resp *http.Response, body []byte) error {
				if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(`"result"`)) || bytes.Contains(body, []byte(`"isError":true`)) {
					return fmt.Errorf("mcp: %d %s", resp.StatusCode, body)
				}
				return nil
			}))
		case "mcp-sdk":
			s, err := b.session(ctx)
			if err != nil {
				closeAll()
				return nil, nil, err
			}
			closers = append(closers, func() { _ = s.Close() })
			args := json.RawMessage(callBody)
			out = append(out, func(ctx context.Context) error {
				res, err := s.CallTool(ctx, &mcp.CallToolParams{Name: "bench.echo", Arguments: args})
				if err != nil {
					return err
				}
				if res.IsError {
					return errors.New("tool error")
				}
				return nil
			})
		}
	}
	return out, closeAll, nil
}

// post returns a caller that POSTs body to path with the API key and checks the answer.
func (b *bench) post(path, body string, check func(*http.Response, []byte) error) caller {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.base+path, strings.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("X-API-Key", b.key)
		resp, err := b.hc.Do(req)
		if err != nil {
			return err
		}
		rb, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil {
			return err
		}
		return check(resp, rb)
	}
}

// keyTransport adds the API key to every request of an SDK session.
type keyTransport struct {
	base http.RoundTripper
	key  string
}

func (k keyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("X-API-Key", k.key)
	return k.base.RoundTrip(r)
}

func (b *bench) session(ctx context.Context) (*mcp.ClientSession, error) {
	client := mcp.NewClient(&mcp.Implementation{Name: "bench", Version: "1"}, nil)
	return client.Connect(ctx, &mcp.StreamableClientTransport{
		Endpoint:             b.base + "/mcp",
		HTTPClient:           &http.Client{Transport: keyTransport{base: b.hc.Transport, key: b.key}, Timeout: 30 * time.Second},
		DisableStandaloneSSE: true,
	}, nil)
}
