package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as the nops binary: with NOPS_CMD_TEST_MAIN=1 it runs main, so the
// signal handling is tested on a real process.
func TestMain(m *testing.M) {
	if os.Getenv("NOPS_CMD_TEST_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func noSignals(chan<- os.Signal) func() { return func() {} }

func runCLI(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb, envOf(env), noSignals)
	return code, out.String(), errb.String()
}

func TestVersion(t *testing.T) {
	code, out, _ := runCLI(t, nil, "version")
	if code != 0 || !strings.HasPrefix(out, "nops ") || !strings.Contains(out, "commit") {
		t.Fatalf("version: %d %q", code, out)
	}
}

func TestConfigPrintRedactsSecrets(t *testing.T) {
	env := map[string]string{
		"NOPS_DATABASE_URL":             "postgres://nops:s3cret-pw@db:5432/nops",
		"NOPS_BOOTSTRAP_ADMIN_PASSWORD": "bootstrap-secret-1",
		"NOPS_HTTP_ADDR":                "0.0.0.0:9999",
	}
	code, out, errOut := runCLI(t, env, "config", "print", "--data-dir", "/srv/nops")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, secret := range []string{"s3cret-pw", "bootstrap-secret-1"} {
		if strings.Contains(out, secret) {
			t.Errorf("config print shows %q:\n%s", secret, out)
		}
	}
	for _, want := range []string{"addr: 0.0.0.0:9999", "data_dir: /srv/nops", "[REDACTED]"} {
		if !strings.Contains(out, want) {
			t.Errorf("config print lacks %q:\n%s", want, out)
		}
	}
}

func TestInvalidConfigExitsNamingField(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want []string
	}{
		{"bad alg", map[string]string{"NOPS_AUTH_SIGNING_ALG": "none"}, []string{"config", "print"}, []string{"auth.signing_alg", "NOPS_AUTH_SIGNING_ALG", "EdDSA, ES256, RS256, HS256"}},
		{"bad level flag", nil, []string{"server", "--log-level", "loud"}, []string{"log.level", "debug, info, warn, error"}},
		{"bad duration", map[string]string{"NOPS_AUTH_TOKEN_TTL": "forever"}, []string{"server"}, []string{"NOPS_AUTH_TOKEN_TTL", "duration"}},
		{"missing file", nil, []string{"--config", "/nonexistent/nops.yaml", "config", "print"}, []string{"/nonexistent/nops.yaml"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, errOut := runCLI(t, tt.env, tt.args...)
			if code == 0 {
				t.Fatal("exit 0 for an invalid configuration")
			}
			for _, w := range tt.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr %q lacks %q", errOut, w)
				}
			}
		})
	}
}

func TestMigrateUpDownStatus(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{"NOPS_DATA_DIR": dir}
	code, out, errOut := runCLI(t, env, "migrate", "status")
	if code != 0 || !strings.Contains(out, "pending") || strings.Contains(out, "applied") {
		t.Fatalf("status on a new database: %d %q %s", code, out, errOut)
	}
	code, out, errOut = runCLI(t, env, "migrate", "up")
	if code != 0 || strings.Contains(out, "pending") {
		t.Fatalf("up: %d %q %s", code, out, errOut)
	}
	code, out, errOut = runCLI(t, env, "migrate", "down")
	if code != 0 || strings.Count(out, "pending") != 1 {
		t.Fatalf("down: %d %q %s", code, out, errOut)
	}
	code, out, _ = runCLI(t, env, "migrate", "up")
	if code != 0 || strings.Contains(out, "pending") {
		t.Fatalf("up again: %d %q", code, out)
	}
}

// process runs the nops binary (this test binary) with args and captures its stderr.
type process struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	stderr bytes.Buffer
	done   chan error
}

func start(t *testing.T, args ...string) *process {
	t.Helper()
	p := &process{done: make(chan error, 1)}
	p.cmd = exec.Command(os.Args[0], args...)
	p.cmd.Env = append(os.Environ(), "NOPS_CMD_TEST_MAIN=1", "NOPS_BOOTSTRAP_ADMIN_PASSWORD=cmd-test-password")
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = pw
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			p.mu.Lock()
			p.stderr.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
	}()
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

func (p *process) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// addr waits for the "serving" log line and returns the address it names.
func (p *process) addr(t *testing.T) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, line := range strings.Split(p.logs(), "\n") {
			var rec struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "nops kernel serving" {
				return rec.Addr
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("server did not start:\n%s", p.logs())
	return ""
}

func (p *process) exitCode(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
		p.done <- nil // let Cleanup's receive proceed
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(30 * time.Second):
		t.Fatalf("process did not exit:\n%s", p.logs())
		return -1
	}
}

func TestServerGracefulShutdown(t *testing.T) {
	p := start(t, "server", "--http-addr", "127.0.0.1:0", "--data-dir", filepath.Join(t.TempDir(), "data"))
	addr := p.addr(t)
	resp, err := http.Get("http://" + addr + "/_readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("readyz %d", resp.StatusCode)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.exitCode(t); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0\n%s", code, p.logs())
	}
	if !strings.Contains(p.logs(), "draining in-flight requests") {
		t.Errorf("no drain log line:\n%s", p.logs())
	}
}

func TestServerSecondSignalExitsAtOnce(t *testing.T) {
	p := start(t, "server", "--http-addr", "127.0.0.1:0", "--data-dir", t.TempDir())
	addr := p.addr(t)
	// An unfinished request keeps the connection active, so the graceful drain has to wait.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /health HTTP/1.1\r\nHost: x\r\n")
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.logs(), "draining in-flight requests") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.exitCode(t); code != 130 {
		t.Fatalf("exit code %d after a second signal, want 130\n%s", code, p.logs())
	}
}
