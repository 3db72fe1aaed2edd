package pythonsdk_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
)

// python3 returns the interpreter's path, or skips (fails when services are required).
func python3(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("python3")
	if err != nil {
		if os.Getenv("NOPS_TEST_REQUIRE_SERVICES") == "1" {
			t.Fatalf("python3 not found and NOPS_TEST_REQUIRE_SERVICES=1: %v", err)
		}
		t.Skipf("python3 not found: %v", err)
	}
	return p
}

// env is what the Python tests get: a kernel, a tenant and its ADMIN API key, and a SUPER_ADMIN
// token for what only an operator may do (other tenants, rate limits, perimeters).
type env struct {
	k      *kerneltest.Kernel
	admin  string // SUPER_ADMIN access token
	tenant string
	apiKey string // the tenant's ADMIN key
}

func decode[T any](t *testing.T, body []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	return v
}

func mustStatus(t *testing.T, resp *http.Response, body []byte, want int) {
	t.Helper()
	if resp.StatusCode != want {
		t.Fatalf("%s %s: status %d, want %d; body %s", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, want, body)
	}
}

func newEnv(t *testing.T, mutate ...func(*config.Config)) *env {
	t.Helper()
	k := kerneltest.Start(t, append([]func(*config.Config){func(c *config.Config) {
		c.Egress.AllowLoopback = "true" // the Python agents listen on 127.0.0.1
		c.Log.Level = "info"
	}}, mutate...)...)
	e := &env{k: k, admin: k.Token(t, "")}
	bearer := "Authorization: Bearer " + e.admin
	resp, body := k.Do(t, "POST", "/v1/tenants", map[string]string{"name": "python", "display_name": "Python SDK tests"}, bearer)
	mustStatus(t, resp, body, http.StatusCreated)
	e.tenant = decode[struct{ ID string }](t, body).ID
	resp, body = k.Do(t, "POST", "/v1/api-keys?tenant="+e.tenant, map[string]string{"name": "python-admin", "role": "ADMIN"}, bearer)
	mustStatus(t, resp, body, http.StatusCreated)
	e.apiKey = decode[struct{ Secret string }](t, body).Secret
	return e
}

func (e *env) environ() []string {
	return append(os.Environ(),
		"NOPS_URL="+e.k.URL,
		"NOPS_API_KEY="+e.apiKey,
		"NOPS_TENANT="+e.tenant,
		"NOPS_ADMIN_TOKEN="+e.admin,
		"NOPS_REQUIRE_INTEGRATION=1", // the integration tests fail instead of skipping
		"PYTHONDONTWRITEBYTECODE=1",
		"PYTHONUNBUFFERED=1",
	)
}

// TestPythonSDK runs the SDK's unittest suite, unit and integration tests, against a real kernel.
func TestPythonSDK(t *testing.T) {
	py := python3(t)
	e := newEnv(t)
	// A second kernel sheds load early: its in-flight cap is 10, so reads (best effort) get 503
	// with Retry-After from 7 requests in flight on.
	gate := newEnv(t, func(c *config.Config) { c.Limits.InFlightMax = 10 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, "-m", "unittest", "discover", "-v")
	cmd.Env = append(e.environ(), "NOPS_GATE_URL="+gate.k.URL, "NOPS_GATE_API_KEY="+gate.apiKey)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python3 -m unittest discover -v: %v\n%s\nkernel log (tail):\n%s", err, out, tail(e.k.Logs.String(), 4000))
	}
	if !strings.Contains(string(out), "Integration") {
		t.Fatalf("the integration tests did not run:\n%s", out)
	}
	t.Logf("python3 -m unittest discover -v:\n%s", out)
}

// TestPythonExampleAgent runs examples/python-agent as a user would (one command, the SDK from
// the repository), invokes its capability through the kernel, and stops it with Ctrl-C (SIGINT):
// it must deregister and exit 0.
func TestPythonExampleAgent(t *testing.T) {
	py := python3(t)
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	script, err := filepath.Abs(filepath.Join("..", "..", "examples", "python-agent", "agent.py"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, py, script)
	cmd.Dir = t.TempDir() // not the repository: the example finds the SDK by itself
	cmd.Env = append(e.environ(), "NOPS_AGENT_NAME=example", "NOPS_HEARTBEAT_INTERVAL=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var agentID string
	var seen []string
	for agentID == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				_ = cmd.Wait()
				t.Fatalf("the example exited before it was ready:\n%s\nstderr:\n%s", strings.Join(seen, "\n"), stderr.String())
			}
			seen = append(seen, l)
			if f := strings.Fields(l); len(f) >= 3 && f[0] == "ready:" {
				agentID = f[2]
			}
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			t.Fatalf("the example did not say ready within 30 s:\n%s\nstderr:\n%s", strings.Join(seen, "\n"), stderr.String())
		}
	}

	key := "X-API-Key: " + e.apiKey
	resp, body := e.k.Do(t, "POST", "/v1/invoke/text.reverse", map[string]string{"text": "hello"}, key)
	mustStatus(t, resp, body, http.StatusOK)
	got := decode[struct {
		Reversed string `json:"reversed"`
		Agent    string `json:"agent"`
	}](t, body)
	if got.Reversed != "olleh" || got.Agent != "example" || resp.Header.Get("Nops-Agent-Id") != agentID {
		t.Fatalf("invoke answered %s (agent %s), want the example's reversal from %s", body, resp.Header.Get("Nops-Agent-Id"), agentID)
	}
	// Input outside the capability's schema is refused by the kernel, naming the field.
	resp, body = e.k.Do(t, "POST", "/v1/invoke/text.reverse", map[string]any{"text": 5}, key)
	mustStatus(t, resp, body, http.StatusBadRequest)
	// The heartbeat thread keeps the agent healthy and reports its load.
	kerneltest.WaitFor(t, 20*time.Second, "a heartbeat with load figures", func() bool {
		resp, body := e.k.Do(t, "GET", "/v1/agents/"+agentID, nil, key)
		return resp.StatusCode == http.StatusOK && strings.Contains(string(body), `"p50_ms"`) && strings.Contains(string(body), `"status":"healthy"`)
	})

	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	for l := range lines {
		seen = append(seen, l)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the example did not exit cleanly on SIGINT: %v\n%s\nstderr:\n%s", err, strings.Join(seen, "\n"), stderr.String())
	}
	resp, body = e.k.Do(t, "GET", "/v1/agents/"+agentID, nil, key)
	mustStatus(t, resp, body, http.StatusNotFound)
	if !strings.Contains(strings.Join(seen, "\n"), "deregistered") {
		t.Errorf("the example did not report its deregistration:\n%s", strings.Join(seen, "\n"))
	}

	// What the quick start (docs/sdk-python.md) shows next: the tenant's events and audit trail.
	kerneltest.WaitFor(t, 20*time.Second, "the agent's events counted", func() bool {
		resp, body := e.k.Do(t, "GET", "/v1/events/stats", nil, key)
		s := string(body)
		return resp.StatusCode == http.StatusOK && strings.Contains(s, "nops.agent.registered.v1") &&
			strings.Contains(s, "nops.invocation.completed.v1") && strings.Contains(s, "nops.agent.deregistered.v1")
	})
	resp, body = e.k.Do(t, "GET", "/v1/audit?limit=100", nil, key)
	mustStatus(t, resp, body, http.StatusOK)
	actions := map[string]bool{}
	for _, r := range decode[struct {
		Items []struct {
			Action   string `json:"action"`
			Resource string `json:"resource"`
		} `json:"items"`
	}](t, body).Items {
		if r.Resource == "agents/"+agentID {
			actions[r.Action] = true
		}
	}
	if !actions["agent.register"] || !actions["agent.deregister"] {
		t.Errorf("audit actions on agents/%s: %v, want agent.register and agent.deregister", agentID, actions)
	}
}

// TestPythonSDKInstallsOffline: `pip install ./sdk/python` needs no package index (the build
// backend is in the tree and uses the standard library only), and the installed package imports
// from outside the repository.
func TestPythonSDKInstallsOffline(t *testing.T) {
	py := python3(t)
	if err := exec.Command(py, "-m", "pip", "--version").Run(); err != nil {
		t.Skipf("pip is not installed for %s: %v", py, err)
	}
	target := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, "-m", "pip", "install", "--no-index", "--no-cache-dir", "--target", target, ".")
	cmd.Env = append(os.Environ(), "PIP_DISABLE_PIP_VERSION_CHECK=1", "PYTHONDONTWRITEBYTECODE=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pip install --no-index .: %v\n%s", err, out)
	}
	check := exec.CommandContext(ctx, py, "-c", "import nops_sdk, sys; assert nops_sdk.__file__.startswith(sys.argv[1]), nops_sdk.__file__; print(nops_sdk.__version__)", target)
	check.Dir = t.TempDir()
	check.Env = append(os.Environ(), "PYTHONPATH="+target, "PYTHONDONTWRITEBYTECODE=1")
	out, err := check.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "0.1.0" {
		t.Fatalf("import the installed package: %v\n%s", err, out)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
