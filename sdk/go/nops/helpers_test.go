package nops_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
	"github.com/nops-kernel/nops/sdk/go/nops"
)

// fixture is a test kernel with a tenant and an ADMIN API key of it.
type fixture struct {
	k      *kerneltest.Kernel
	super  string // "Authorization: Bearer …" of the bootstrap SUPER_ADMIN
	tenant string
	apiKey string // raw ADMIN key of the tenant
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	k := kerneltest.Start(t)
	f := &fixture{k: k, super: "Authorization: Bearer " + k.Token(t, "")}
	resp, body := k.Do(t, "POST", "/v1/tenants", map[string]string{"name": "sdk"}, f.super)
	mustStatus(t, resp, body, http.StatusCreated)
	f.tenant = decode[struct {
		ID string `json:"id"`
	}](t, body).ID
	resp, body = k.Do(t, "POST", "/v1/api-keys?tenant="+f.tenant, map[string]any{"name": "sdk-admin", "role": "ADMIN"}, f.super)
	mustStatus(t, resp, body, http.StatusCreated)
	f.apiKey = decode[struct {
		Secret string `json:"secret"`
	}](t, body).Secret
	return f
}

// client returns an SDK client of the tenant's ADMIN key that sends through the kernel's
// contract-checking transport, so every exchange is validated against api/kernel.yaml.
func (f *fixture) client(t *testing.T, o nops.Options) *nops.Client {
	t.Helper()
	o.BaseURL = f.k.URL
	if o.APIKey == "" && o.BearerToken == "" {
		o.APIKey = f.apiKey
	}
	if o.HTTPClient == nil {
		o.HTTPClient = f.k.Client
	}
	c, err := nops.NewClient(o)
	if err != nil {
		t.Fatalf("new client: %v", err)
	}
	return c
}

// echoCapability echoes its input with what the handler saw of the invocation.
func echoCapability(seen *atomic.Value) nops.Capability {
	return nops.Capability{
		Name:        "echo",
		Description: "echoes its input",
		InputSchema: json.RawMessage(`{"type":"object","required":["message"],"properties":{"message":{"type":"string","maxLength":64}}}`),
		Handle: func(ctx context.Context, inv *nops.Invocation) (any, error) {
			if seen != nil {
				seen.Store(observed(ctx, inv))
			}
			return json.RawMessage(inv.Input), nil
		},
	}
}

// startAgent runs a on a fresh loopback listener until the test ends or the returned stop is
// called; stop returns Run's error.
func startAgent(t *testing.T, a *nops.Agent) (stop func() error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var runErr error
	go func() {
		runErr = a.Run(ctx, ln)
		close(done)
	}()
	var once atomic.Bool
	stop = func() error {
		if once.CompareAndSwap(false, true) {
			cancel()
			select {
			case <-done:
			case <-time.After(60 * time.Second):
				t.Errorf("agent did not stop within 60 s")
				return nil
			}
		}
		<-done
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	kerneltest.WaitFor(t, 20*time.Second, "agent registered", func() bool {
		select {
		case <-done:
			t.Fatalf("agent stopped: %v", runErr)
		default:
		}
		return a.ID() != ""
	})
	return stop
}

func mustStatus(t *testing.T, resp *http.Response, body []byte, want int) {
	t.Helper()
	if resp.StatusCode != want {
		t.Fatalf("%s %s: status %d, want %d: %s", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, want, body)
	}
}

func decode[T any](t *testing.T, body []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	return v
}

// digest is the Content-Digest of b.
func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha-256=:" + base64.StdEncoding.EncodeToString(sum[:]) + ":"
}

// listen opens a loopback listener on a free port.
func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}
