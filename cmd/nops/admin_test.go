package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
)

func fastCheckpoints(c *config.Config) {
	c.Audit.CheckpointEvery = 1
	c.Audit.CheckpointInterval = config.Duration(200 * time.Millisecond)
}

// with returns a copy of env with kv ("NAME", "value", …) set; an empty value unsets NAME.
func with(env map[string]string, kv ...string) map[string]string {
	out := maps.Clone(env)
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			delete(out, kv[i])
		} else {
			out[kv[i]] = kv[i+1]
		}
	}
	return out
}

// ok runs the CLI and fails the test unless it exits 0.
func ok(t *testing.T, env map[string]string, args ...string) (stdout, stderr string) {
	t.Helper()
	code, out, errOut := runCLI(t, env, args...)
	if code != 0 {
		t.Fatalf("nops %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out, errOut
}

// fails runs the CLI and fails the test unless it exits 1 with one "nops: …" error on stderr
// and nothing that looks like a Go panic or stack trace.
func fails(t *testing.T, env map[string]string, args ...string) (stdout, stderr string) {
	t.Helper()
	code, out, errOut := runCLI(t, env, args...)
	if code != 1 {
		t.Fatalf("nops %s: exit %d, want 1\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	if !strings.HasPrefix(errOut, "nops: ") || strings.Contains(errOut, "goroutine ") || strings.Contains(errOut, ".go:") {
		t.Fatalf("nops %s: stderr is not one clear error: %q", strings.Join(args, " "), errOut)
	}
	return out, errOut
}

func fromJSON[T any](t *testing.T, s string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("output is not the expected JSON: %v\n%s", err, s)
	}
	return v
}

type listOf[T any] struct {
	Items []T `json:"items"`
}

type idName struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Status string `json:"status"`
}

type agentOut struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Version string `json:"version"`
}

var secretLine = regexp.MustCompile(`(?m)^SECRET\s+(nops_\S+)$`)

func secretOf(t *testing.T, out string) string {
	t.Helper()
	m := secretLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no SECRET line in:\n%s", out)
	}
	return m[1]
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func agentJSON(name, version string) string {
	return fmt.Sprintf(`{"name":%q,"version":%q,"endpoint":"https://agents.example.com/%s","criticality":"essential",
 "labels":{"env":"prod"},"capabilities":[{"name":"text.summarize","description":"Summarise a text"}]}`, name, version, name)
}

// TestAdminCLIFlow drives a real kernel through the admin commands only, the way an operator
// would: log in, create a tenant and a key, manage agents with the key, rotate and revoke keys,
// then read the audit log and check an inclusion proof offline.
func TestAdminCLIFlow(t *testing.T) {
	k := kerneltest.Start(t, fastCheckpoints)
	dir := t.TempDir()
	base := map[string]string{"NOPS_SERVER": k.URL}

	// login → the token alone on stdout.
	pwFile := writeFile(t, dir, "password", kerneltest.AdminPassword+"\n")
	out, errOut := ok(t, base, "login", "--username", "admin", "--password-file", pwFile)
	token := strings.TrimSpace(out)
	if strings.Count(token, ".") != 2 || errOut != "" {
		t.Fatalf("login printed %q (stderr %q), want a JWT alone", out, errOut)
	}
	out, _ = ok(t, base, "login", "--username", "admin", "--password-file", pwFile, "-o", "json")
	if tr := fromJSON[struct {
		TokenType string `json:"token_type"`
	}](t, out); tr.TokenType != "Bearer" {
		t.Fatalf("login -o json: %s", out)
	}
	_, errOut = fails(t, base, "login", "--username", "admin", "--password-file", writeFile(t, dir, "wrong", "not-the-password\n"))
	if !strings.Contains(errOut, "Unauthorized") || strings.Contains(errOut, "not-the-password") {
		t.Fatalf("bad password: %q", errOut)
	}
	admin := with(base, "NOPS_TOKEN", token)

	// tenants create/list/get/suspend/resume.
	out, _ = ok(t, admin, "tenants", "create", "acme", "--display-name", "Acme Corp", "-o", "json")
	ten := fromJSON[idName](t, out)
	if !strings.HasPrefix(ten.ID, "ten_") || ten.Name != "acme" || ten.Status != "active" {
		t.Fatalf("tenants create: %s", out)
	}
	out, _ = ok(t, admin, "tenants", "list")
	if !regexp.MustCompile(`(?m)^ID\s+NAME\s+DISPLAY NAME\s+STATUS\s+CREATED$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^`+ten.ID+`\s+acme\s+Acme Corp\s+active\s`).MatchString(out) {
		t.Fatalf("tenants list:\n%s", out)
	}
	out, _ = ok(t, admin, "tenants", "list", "-o", "json")
	if l := fromJSON[listOf[idName]](t, out); len(l.Items) != 1 || l.Items[0].ID != ten.ID {
		t.Fatalf("tenants list -o json: %s", out)
	}
	for _, ref := range []string{ten.ID, "acme"} {
		out, _ = ok(t, admin, "tenants", "get", ref)
		if !regexp.MustCompile(`(?m)^ID\s+`+ten.ID+`$`).MatchString(out) || !strings.Contains(out, "Acme Corp") {
			t.Fatalf("tenants get %s:\n%s", ref, out)
		}
	}
	out, _ = ok(t, admin, "tenants", "suspend", "acme", "-o", "json")
	if fromJSON[idName](t, out).Status != "suspended" {
		t.Fatalf("suspend: %s", out)
	}
	out, _ = ok(t, admin, "tenants", "resume", ten.ID)
	if !regexp.MustCompile(`(?m)^STATUS\s+active$`).MatchString(out) {
		t.Fatalf("resume:\n%s", out)
	}

	// keys create as SUPER_ADMIN in the tenant (named by name): the secret once, with a warning.
	out, errOut = ok(t, admin, "keys", "create", "--tenant", "acme", "--name", "ci", "--role", "admin", "--expires-in", "720h")
	adminKey := secretOf(t, out)
	if !strings.Contains(errOut, "shown this once") {
		t.Errorf("keys create gave no warning to store the secret: %q", errOut)
	}
	if !regexp.MustCompile(`(?m)^ROLE\s+ADMIN$`).MatchString(out) || !regexp.MustCompile(`(?m)^EXPIRES\s+20`).MatchString(out) {
		t.Errorf("keys create:\n%s", out)
	}
	tenantAdmin := with(base, "NOPS_API_KEY", adminKey)
	out, _ = ok(t, tenantAdmin, "keys", "create", "--name", "viewer", "--role", "VIEWER", "-o", "json")
	viewer := fromJSON[struct {
		ID     string `json:"id"`
		Secret string `json:"secret"`
	}](t, out)
	if !strings.HasPrefix(viewer.Secret, "nops_") {
		t.Fatalf("keys create -o json: %s", out)
	}

	// agents with the tenant's ADMIN key.
	specFile := writeFile(t, dir, "agent.json", agentJSON("summarizer", "v1.2.0"))
	out, _ = ok(t, tenantAdmin, "agents", "register", "-f", specFile, "-o", "json")
	agent := fromJSON[agentOut](t, out)
	if !strings.HasPrefix(agent.ID, "agt_") || agent.Version != "1.2.0" {
		t.Fatalf("agents register: %s", out)
	}
	for _, name := range []string{"translator", "classifier"} {
		ok(t, tenantAdmin, "agents", "register", "-f", writeFile(t, dir, name+".json", agentJSON(name, "1.0.0")))
	}
	out, _ = ok(t, tenantAdmin, "agents", "list", "--page-size", "1") // three pages, all followed
	if !regexp.MustCompile(`(?m)^ID\s+NAME\s+VERSION\s+STATUS\s+HEARTBEAT\s+CAPABILITIES$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^`+agent.ID+`\s+summarizer\s+1\.2\.0\s+healthy\s+.*ago\s+text\.summarize$`).MatchString(out) {
		t.Fatalf("agents list:\n%s", out)
	}
	if n := strings.Count(out, "agt_"); n != 3 {
		t.Fatalf("agents list --page-size 1 listed %d agents, want 3:\n%s", n, out)
	}
	out, _ = ok(t, tenantAdmin, "agents", "list", "-o", "json", "--page-size", "2", "--capability", "text.summarize", "--status", "healthy")
	if l := fromJSON[listOf[agentOut]](t, out); len(l.Items) != 3 {
		t.Fatalf("agents list -o json: %d items\n%s", len(l.Items), out)
	}
	out, _ = ok(t, tenantAdmin, "agents", "list", "--selector", "env=staging", "-o", "json")
	if l := fromJSON[listOf[agentOut]](t, out); len(l.Items) != 0 {
		t.Fatalf("selector env=staging matched %s", out)
	}
	out, _ = ok(t, tenantAdmin, "agents", "get", agent.ID)
	etag := regexp.MustCompile(`(?m)^ETAG\s+(\S+)$`).FindStringSubmatch(out)
	if etag == nil || !strings.Contains(out, "text.summarize") || !strings.Contains(out, "env=prod") {
		t.Fatalf("agents get:\n%s", out)
	}
	// update without --if-match reads the current ETag first; a stale --if-match gets 412.
	out, _ = ok(t, tenantAdmin, "agents", "update", agent.ID, "-f", writeFile(t, dir, "v13.json", agentJSON("summarizer", "1.3.0")), "-o", "json")
	if fromJSON[agentOut](t, out).Version != "1.3.0" {
		t.Fatalf("agents update: %s", out)
	}
	_, errOut = fails(t, tenantAdmin, "agents", "update", agent.ID, "-f", specFile, "--if-match", etag[1])
	if !strings.Contains(errOut, "Precondition Failed") || !strings.Contains(errOut, "[request id ") {
		t.Fatalf("stale --if-match: %q", errOut)
	}
	out, _ = ok(t, tenantAdmin, "agents", "heartbeat", agent.ID, "--in-flight", "3", "--p95-ms", "40", "--error-rate", "0.01")
	if !regexp.MustCompile(`(?m)^STATUS\s+healthy$`).MatchString(out) {
		t.Fatalf("agents heartbeat:\n%s", out)
	}
	out, _ = ok(t, tenantAdmin, "agents", "get", agent.ID, "-o", "json")
	if l := fromJSON[struct {
		Load struct {
			InFlight int64 `json:"in_flight"`
		} `json:"load"`
	}](t, out); l.Load.InFlight != 3 {
		t.Fatalf("heartbeat load not recorded: %s", out)
	}

	// A bad request: the problem names the field and the request id; exit 1.
	bad := writeFile(t, dir, "bad.json", `{"name":"x","version":"1.0.0","endpoint":"https://user:pw@a.example"}`)
	_, errOut = fails(t, tenantAdmin, "agents", "register", "-f", bad)
	if !regexp.MustCompile(`^nops: Bad Request: .*\(body\.endpoint: .+\) \[request id \S+\]\n$`).MatchString(errOut) {
		t.Fatalf("bad request: %q", errOut)
	}
	_, errOut = fails(t, tenantAdmin, "agents", "register", "-f", writeFile(t, dir, "broken.json", "{\n \"name\": \n"))
	if !strings.Contains(errOut, "invalid JSON at line 3") {
		t.Fatalf("broken JSON: %q", errOut)
	}
	_, errOut = fails(t, tenantAdmin, "audit", "list", "--decision", "maybe")
	if !strings.Contains(errOut, "query.decision") {
		t.Fatalf("bad --decision: %q", errOut)
	}
	// VIEWER is refused a write (an audited denial).
	_, errOut = fails(t, with(base, "NOPS_API_KEY", viewer.Secret), "agents", "delete", agent.ID)
	if !strings.Contains(errOut, "Forbidden") {
		t.Fatalf("viewer delete: %q", errOut)
	}

	out, _ = ok(t, tenantAdmin, "agents", "delete", agent.ID)
	if !strings.Contains(out, "deregistered") {
		t.Fatalf("agents delete: %q", out)
	}
	_, errOut = fails(t, tenantAdmin, "agents", "get", agent.ID)
	if !strings.Contains(errOut, "Not Found") {
		t.Fatalf("get a deleted agent: %q", errOut)
	}

	// keys list/get never show a secret; rotate keeps the old secret for the grace; revoke.
	for _, args := range [][]string{{"keys", "list"}, {"keys", "list", "-o", "json"}, {"keys", "get", viewer.ID}, {"keys", "get", viewer.ID, "-o", "json"}} {
		out, _ = ok(t, tenantAdmin, args...)
		if strings.Contains(out, "nops_") || !strings.Contains(out, viewer.ID) {
			t.Fatalf("nops %s shows a secret or lacks the key:\n%s", strings.Join(args, " "), out)
		}
	}
	out, _ = ok(t, tenantAdmin, "keys", "rotate", viewer.ID, "--grace", "1h")
	rotated := secretOf(t, out)
	if rotated == viewer.Secret || !regexp.MustCompile(`(?m)^OLD SECRET UNTIL\s+20`).MatchString(out) {
		t.Fatalf("keys rotate:\n%s", out)
	}
	for _, secret := range []string{viewer.Secret, rotated} {
		ok(t, with(base, "NOPS_API_KEY", secret), "agents", "list")
	}
	out, _ = ok(t, tenantAdmin, "keys", "revoke", viewer.ID)
	if !strings.Contains(out, "revoked") {
		t.Fatalf("keys revoke: %q", out)
	}
	_, errOut = fails(t, with(base, "NOPS_API_KEY", rotated), "agents", "list")
	if !strings.Contains(errOut, "Unauthorized") || strings.Contains(errOut, rotated) {
		t.Fatalf("revoked key: %q", errOut)
	}

	// audit: list, the denial, a checkpoint, a proof checked offline, remote verification.
	out, _ = ok(t, tenantAdmin, "audit", "list")
	if !regexp.MustCompile(`(?m)^SEQ\s+TIME\s+PRINCIPAL\s+ACTION\s+RESOURCE\s+DECISION\s+REASON$`).MatchString(out) ||
		!strings.Contains(out, "agent.register") || strings.Contains(out, "nops_") {
		t.Fatalf("audit list:\n%s", out)
	}
	out, _ = ok(t, tenantAdmin, "audit", "list", "--decision", "deny", "--page-size", "1", "-o", "json")
	denials := fromJSON[listOf[struct {
		Decision struct {
			Allowed bool `json:"allowed"`
		} `json:"decision"`
	}]](t, out)
	if len(denials.Items) == 0 {
		t.Fatalf("no denial in the audit log: %s", out)
	}
	for _, d := range denials.Items {
		if d.Decision.Allowed {
			t.Fatalf("--decision deny listed an allowed record: %s", out)
		}
	}
	out, _ = ok(t, admin, "audit", "list", "--action", "tenant.create")
	if !strings.Contains(out, "tenant.create") {
		t.Fatalf("global audit list lacks tenant.create:\n%s", out)
	}
	ok(t, admin, "audit", "list", "--tenant", "acme", "-o", "json")

	var cp struct {
		Tree        string `json:"tree"`
		Size        int64  `json:"size"`
		VerifierKey string `json:"verifier_key"`
	}
	kerneltest.WaitFor(t, 10*time.Second, "a signed checkpoint of size ≥ 3", func() bool {
		code, out, _ := runCLI(t, tenantAdmin, "audit", "checkpoint", "-o", "json")
		if code != 0 {
			return false
		}
		cp = fromJSON[struct {
			Tree        string `json:"tree"`
			Size        int64  `json:"size"`
			VerifierKey string `json:"verifier_key"`
		}](t, out)
		return cp.Size >= 3
	})
	out, _ = ok(t, tenantAdmin, "audit", "checkpoint")
	if !regexp.MustCompile(`(?m)^VERIFIER KEY\s+`+regexp.QuoteMeta(cp.VerifierKey)+`$`).MatchString(out) || !strings.Contains(out, "— ") {
		t.Fatalf("audit checkpoint:\n%s", out)
	}
	bundle := filepath.Join(dir, "bundle.json")
	_, errOut = ok(t, tenantAdmin, "audit", "proof", "1", "-o", bundle)
	if !strings.Contains(errOut, "check-proof") {
		t.Errorf("audit proof: %q", errOut)
	}
	out, _ = ok(t, nil, "audit", "check-proof", bundle, "--verifier-key", cp.VerifierKey)
	if !strings.HasPrefix(out, "ok: record 1 of tree "+ten.ID) {
		t.Fatalf("check-proof of the saved bundle: %q", out)
	}
	out, _ = ok(t, tenantAdmin, "audit", "proof", "0") // to stdout
	if fromJSON[struct {
		Format string `json:"format"`
	}](t, out).Format == "" {
		t.Fatalf("audit proof to stdout: %s", out)
	}
	_, errOut = fails(t, tenantAdmin, "audit", "proof", "100000", "-o", filepath.Join(dir, "none.json"))
	if !strings.Contains(errOut, "query.seq") {
		t.Errorf("proof of a record beyond the tree: %q", errOut)
	}
	out, _ = ok(t, tenantAdmin, "audit", "remote-verify")
	if !strings.HasPrefix(out, "tree "+ten.ID+": ok") {
		t.Fatalf("audit remote-verify: %q", out)
	}
	out, _ = ok(t, admin, "audit", "remote-verify", "-o", "json")
	if r := fromJSON[struct {
		Tree string `json:"tree"`
		OK   bool   `json:"ok"`
	}](t, out); !r.OK || r.Tree != "global" {
		t.Fatalf("global remote-verify: %s", out)
	}

	// tenants delete: refused while agents remain, then with --cascade.
	ok(t, tenantAdmin, "agents", "register", "-f", specFile)
	_, errOut = fails(t, admin, "tenants", "delete", "acme")
	if !strings.Contains(errOut, "Conflict") {
		t.Fatalf("delete with agents: %q", errOut)
	}
	out, _ = ok(t, admin, "tenants", "delete", "acme", "--cascade")
	if !strings.Contains(out, "deleted") {
		t.Fatalf("tenants delete --cascade: %q", out)
	}
	_, errOut = fails(t, admin, "tenants", "get", ten.ID)
	if !strings.Contains(errOut, "Not Found") {
		t.Fatalf("get a deleted tenant: %q", errOut)
	}
	_, errOut = fails(t, admin, "tenants", "get", "acme")
	if !strings.Contains(errOut, `no tenant named "acme"`) {
		t.Fatalf("get a deleted tenant by name: %q", errOut)
	}
}

// TestAdminCLILoginPasswordStdin runs the real binary so that the password comes on its stdin.
func TestAdminCLILoginPasswordStdin(t *testing.T) {
	k := kerneltest.Start(t)
	cmd := exec.Command(os.Args[0], "login", "--username", "admin", "--password-stdin")
	cmd.Env = append(os.Environ(), "NOPS_CMD_TEST_MAIN=1", "NOPS_SERVER="+k.URL, "NOPS_TOKEN=", "NOPS_API_KEY=")
	cmd.Stdin = strings.NewReader(kerneltest.AdminPassword + "\r\n")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("login: %v\n%s", err, stderr.String())
	}
	token := strings.TrimSpace(string(out))
	stdout, _ := ok(t, map[string]string{"NOPS_SERVER": k.URL, "NOPS_TOKEN": token}, "tenants", "list", "-o", "json")
	fromJSON[listOf[idName]](t, stdout)

	// The token from an API key login works as well.
	stdout, _ = ok(t, map[string]string{"NOPS_SERVER": k.URL, "NOPS_TOKEN": token}, "tenants", "create", "beta", "-o", "json")
	ten := fromJSON[idName](t, stdout)
	stdout, _ = ok(t, map[string]string{"NOPS_SERVER": k.URL, "NOPS_TOKEN": token}, "keys", "create", "--tenant", ten.ID, "--name", "v", "--role", "VIEWER")
	stdout, _ = ok(t, map[string]string{"NOPS_SERVER": k.URL, "NOPS_API_KEY": secretOf(t, stdout)}, "login")
	stdout, _ = ok(t, map[string]string{"NOPS_SERVER": k.URL, "NOPS_TOKEN": strings.TrimSpace(stdout)}, "agents", "list")
	if !strings.HasPrefix(stdout, "ID ") {
		t.Fatalf("agents list with a key's token: %q", stdout)
	}
}

func TestAdminCLIClientErrors(t *testing.T) {
	// A closed port: nothing listens there.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close()

	problem := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/tenants":
			w.Header().Set("Content-Type", "application/problem+json")
			w.Header().Set("X-Request-ID", "req_header")
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"type":"urn:nops:problem:invalid","title":"Bad Request","status":400,"code":"invalid",
				"detail":"the request does not match\u001b[31m the API contract","request_id":"req_body",
				"errors":[{"name":"body.name","reason":"too long"},{"name":"query.limit","reason":"must be between 1 and 500"}]}`)
		case "/v1/api-keys":
			// A redirect to another origin must not carry the API key there.
			http.Redirect(w, r, "http://elsewhere.invalid/v1/api-keys", http.StatusTemporaryRedirect)
		default:
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusBadGateway)
			fmt.Fprint(w, "<html>upstream down</html>")
		}
	}))
	defer problem.Close()

	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string // the whole of stderr, when it starts with "^"; else a part of it
	}{
		{"unreachable", map[string]string{"NOPS_SERVER": closed}, []string{"tenants", "list"},
			"nops: cannot reach the kernel at " + closed + " (--server / NOPS_SERVER): "},
		{"problem", map[string]string{"NOPS_SERVER": problem.URL, "NOPS_TOKEN": "t"}, []string{"tenants", "list"},
			"^nops: Bad Request: the request does not match [31m the API contract (body.name: too long, query.limit: must be between 1 and 500) [request id req_body]\n"},
		{"not a problem", map[string]string{"NOPS_SERVER": problem.URL, "NOPS_TOKEN": "t"}, []string{"agents", "list"},
			"^nops: HTTP 502 Bad Gateway\n"},
		{"cross-origin redirect", map[string]string{"NOPS_SERVER": problem.URL, "NOPS_API_KEY": "nops_k_s"}, []string{"keys", "list"},
			"^nops: HTTP 307 Temporary Redirect: redirected to http://elsewhere.invalid/v1/api-keys, not followed"},
		{"bad output", nil, []string{"tenants", "list", "-o", "yaml"}, `-o/--output: must be table or json, got "yaml"`},
		{"bad server", map[string]string{"NOPS_SERVER": "ftp://x"}, []string{"agents", "list"}, `scheme must be http or https`},
		{"two credentials", nil, []string{"keys", "list", "--token", "a", "--api-key", "b"}, "give one credential"},
		{"no file", nil, []string{"agents", "register", "-f", "/nonexistent/agent.json"}, "/nonexistent/agent.json"},
		{"bad page size", nil, []string{"agents", "list", "--page-size", "0"}, "--page-size: must be between 1 and 500"},
		{"bad seq", nil, []string{"audit", "proof", "x"}, `SEQ: want a record sequence number`},
		{"login without a password source", nil, []string{"login", "--username", "admin"}, "--password-stdin or --password-file"},
		{"login without credentials", nil, []string{"login"}, "--api-key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errOut := fails(t, tt.env, tt.args...)
			if want, whole := strings.CutPrefix(tt.want, "^"); whole {
				if !strings.HasPrefix(errOut, want) {
					t.Fatalf("stderr %q, want it to start with %q", errOut, want)
				}
			} else if !strings.Contains(errOut, tt.want) {
				t.Fatalf("stderr %q lacks %q", errOut, tt.want)
			}
		})
	}
}

func TestAdminCLINoCredentialHint(t *testing.T) {
	k := kerneltest.Start(t)
	_, errOut := fails(t, map[string]string{"NOPS_SERVER": k.URL}, "agents", "list")
	if !strings.Contains(errOut, "Unauthorized") || !strings.Contains(errOut, "hint: no credential given") {
		t.Fatalf("no credential: %q", errOut)
	}
	// The offline audit commands are unchanged next to the remote ones.
	code, out, _ := runCLI(t, nil, "audit", "--help")
	for _, sub := range []string{"verify", "check-proof", "list", "checkpoint", "proof", "remote-verify"} {
		if code != 0 || !regexp.MustCompile(`(?m)^\s+`+sub+`\s`).MatchString(out) {
			t.Errorf("audit --help lacks %s:\n%s", sub, out)
		}
	}
}

func TestAdminCLIEscapesIDs(t *testing.T) {
	paths := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paths <- r.URL.EscapedPath() + "?" + r.URL.RawQuery
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, `{"type":"urn:nops:problem:not_found","title":"Not Found","status":404,"code":"not_found","detail":"agent not found"}`)
	}))
	defer srv.Close()
	_, errOut := fails(t, map[string]string{"NOPS_SERVER": srv.URL + "/base/", "NOPS_API_KEY": "k"}, "agents", "get", "a/b?c", "--tenant", "ten_x")
	if errOut != "nops: Not Found: agent not found\n" {
		t.Fatalf("stderr %q", errOut)
	}
	if got, want := <-paths, "/base/v1/agents/a%2Fb%3Fc?tenant=ten_x"; got != want {
		t.Fatalf("request %q, want %q", got, want)
	}
}
