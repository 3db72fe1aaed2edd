// Package kerneltest starts real kernels for tests, the way cmd/nops does, on 127.0.0.1:0 with
// embedded SQLite and JetStream in a temporary directory (or whatever the config mutators say),
// and gives them an HTTP client that checks the live contract: every request the test sends and
// every response the server returns is validated against api/kernel.yaml. Only tests import it.
package kerneltest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/kernel"
	"github.com/nops-kernel/nops/internal/telemetry"
)

// AdminPassword is the bootstrap admin's password in test kernels.
const AdminPassword = "test-admin-password-0123"

// Kernel is a running test kernel.
type Kernel struct {
	*kernel.Kernel
	Config config.Config
	URL    string       // http://127.0.0.1:port
	Client *http.Client // validates every exchange against the spec
	Logs   *Buffer      // everything the kernel logged
	Out    *Buffer      // what the kernel printed (the generated admin password)
}

// Start builds and runs a kernel; it is stopped and closed when the test ends.
func Start(t testing.TB, mutate ...func(*config.Config)) *Kernel {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.Auth.BootstrapAdminPassword = AdminPassword
	cfg.Log.Level = "debug"
	// Every test client comes from 127.0.0.1: per-IP limits would make tests depend on each
	// other's pace. Tests of the limits set them.
	cfg.Limits.PerIP = ""
	cfg.Limits.InFlightPerIP = 100000
	cfg.Limits.InFlightMax = 100000
	for _, m := range mutate {
		m(&cfg)
	}
	logs, out := &Buffer{}, &Buffer{}
	ctx, cancel := context.WithCancel(context.Background())
	k, err := kernel.New(ctx, cfg, kernel.Options{
		Logger:     telemetry.NewLogger(logs, slog.LevelDebug),
		Out:        out,
		Version:    "test",
		Commit:     "test",
		BcryptCost: bcrypt.MinCost,
	})
	if err != nil {
		cancel()
		t.Fatalf("start kernel: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- k.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("kernel run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("kernel did not stop within 30s")
		}
		if err := k.Close(); err != nil {
			t.Errorf("close kernel: %v", err)
		}
	})
	tk := &Kernel{Kernel: k, Config: cfg, URL: "http://" + k.Addr(), Logs: logs, Out: out}
	tk.Client = &http.Client{
		Transport: NewContractTransport(t, http.DefaultTransport.(*http.Transport).Clone()),
		Timeout:   30 * time.Second,
		// Tests look at each response the server sends, redirects included.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	t.Cleanup(tk.Client.CloseIdleConnections)
	return tk
}

// Do sends a request and returns the response with its body read. body is JSON-encoded unless
// it is a []byte or string, sent as is. headers are "Name: value" strings.
func (k *Kernel) Do(t testing.TB, method, path string, body any, headers ...string) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	default:
		js, err := json.Marshal(b)
		if err != nil {
			t.Fatalf("encode request body: %v", err)
		}
		rd = bytes.NewReader(js)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, k.URL+path, rd)
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for _, h := range headers {
		name, value, _ := strings.Cut(h, ":")
		req.Header.Set(strings.TrimSpace(name), strings.TrimSpace(value))
	}
	resp, err := k.Client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp, b
}

// Token logs in as the bootstrap admin and returns an access token, narrowed to scope when not
// empty.
func (k *Kernel) Token(t testing.TB, scope string) string {
	t.Helper()
	req := map[string]string{"username": "admin", "password": AdminPassword}
	if scope != "" {
		req["scope"] = scope
	}
	resp, body := k.Do(t, http.MethodPost, "/v1/auth/token", req)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("login: %d %s", resp.StatusCode, body)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(body, &tok); err != nil || tok.AccessToken == "" {
		t.Fatalf("login response %s: %v", body, err)
	}
	return tok.AccessToken
}

// WaitFor polls cond every 50ms until it holds or timeout passes.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		if cond() {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Buffer is a goroutine-safe bytes.Buffer for captured output.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

var errContract = errors.New("contract violation")
