package main

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
)

// TestEchoAgentCommand builds the example, runs it against a real kernel as the quick start
// does (NOPS_URL, NOPS_API_KEY), invokes echo through the kernel, and stops it with SIGINT: it
// must exit 0 and leave no agent registered.
func TestEchoAgentCommand(t *testing.T) {
	k := kerneltest.Start(t)
	super := "Authorization: Bearer " + k.Token(t, "")
	resp, body := k.Do(t, "POST", "/v1/tenants", map[string]string{"name": "acme"}, super)
	mustStatus(t, resp, body, http.StatusCreated)
	tenant := decode[struct {
		ID string `json:"id"`
	}](t, body).ID
	resp, body = k.Do(t, "POST", "/v1/api-keys?tenant="+tenant, map[string]any{"name": "echo", "role": "OPERATOR"}, super)
	mustStatus(t, resp, body, http.StatusCreated)
	key := "X-API-Key: " + decode[struct {
		Secret string `json:"secret"`
	}](t, body).Secret

	bin := filepath.Join(t.TempDir(), "echo-agent")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "NOPS_URL="+k.URL, "NOPS_API_KEY="+strings.TrimPrefix(key, "X-API-Key: "))
	logs := &kerneltest.Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
	})

	kerneltest.WaitFor(t, 30*time.Second, "echo-agent registered", func() bool {
		resp, body := k.Do(t, "GET", "/v1/agents?capability=echo", nil, key)
		return resp.StatusCode == http.StatusOK && strings.Contains(string(body), `"name":"echo-agent"`)
	})
	resp, body = k.Do(t, "POST", "/v1/invoke/echo", map[string]string{"message": "hello"}, key, "Nops-Timeout-Ms: 4000")
	mustStatus(t, resp, body, http.StatusOK)
	out := decode[struct {
		Message      string `json:"message"`
		InvocationID string `json:"invocation_id"`
		Tenant       string `json:"tenant"`
		DeadlineMs   int64  `json:"deadline_ms"`
	}](t, body)
	if out.Message != "hello" || out.InvocationID != resp.Header.Get("Nops-Invocation-Id") || out.Tenant != tenant ||
		out.DeadlineMs <= 0 || out.DeadlineMs > 4000 {
		t.Fatalf("echo answered %s", body)
	}
	// The schema the agent registered is enforced by the kernel.
	resp, body = k.Do(t, "POST", "/v1/invoke/echo", map[string]any{"message": "hi", "extra": 1}, key)
	mustStatus(t, resp, body, http.StatusBadRequest)

	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("echo-agent exited with %v:\n%s", err, logs)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("echo-agent did not exit after SIGINT:\n%s", logs)
	}
	resp, body = k.Do(t, "GET", "/v1/agents", nil, key)
	mustStatus(t, resp, body, http.StatusOK)
	if strings.Contains(string(body), `"name":"echo-agent"`) {
		t.Fatalf("the agent is still registered after shutdown: %s", body)
	}
	for _, want := range []string{"echo-agent listening", "agent registered", "invocation served", "agent deregistered"} {
		if !strings.Contains(logs.String(), want) {
			t.Fatalf("log lacks %q:\n%s", want, logs)
		}
	}
}

func mustStatus(t *testing.T, resp *http.Response, body []byte, want int) {
	t.Helper()
	if resp.StatusCode != want {
		t.Fatalf("%s %s: %d, want %d: %s", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, want, body)
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
