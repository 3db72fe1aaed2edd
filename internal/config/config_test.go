package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestDefaultIsValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
}

func envMap(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestLoadPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "nops.yaml")
	yaml := "data_dir: /from/file\nhttp:\n  addr: 127.0.0.1:1111\n  read_timeout: 7s\nlog:\n  level: debug\n"
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(Sources{
		File:  file,
		Env:   envMap(map[string]string{"NOPS_HTTP_ADDR": "127.0.0.1:2222", "NOPS_LOG_LEVEL": "warn"}),
		Flags: map[string]string{"http-addr": "127.0.0.1:3333"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.DataDir = "/from/file"                       // file only
	want.HTTP.ReadTimeout = Duration(7 * time.Second) // file only
	want.Log.Level = "warn"                           // env beats file
	want.HTTP.Addr = "127.0.0.1:3333"                 // flag beats env and file
	if diff := cmp.Diff(want, c); diff != "" {
		t.Fatalf("config (-want +got):\n%s", diff)
	}
}

func TestLoadRejectsUnknownYAMLKeys(t *testing.T) {
	file := filepath.Join(t.TempDir(), "nops.yaml")
	if err := os.WriteFile(file, []byte("http:\n  adr: 127.0.0.1:1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(Sources{File: file})
	if err == nil || !strings.Contains(err.Error(), "adr") {
		t.Fatalf("Load = %v, want an error naming the unknown key", err)
	}
}

func TestLoadBadEnvValueNamesVariable(t *testing.T) {
	_, err := Load(Sources{Env: envMap(map[string]string{"NOPS_HTTP_READ_TIMEOUT": "soon"})})
	if err == nil || !strings.Contains(err.Error(), "NOPS_HTTP_READ_TIMEOUT") || !strings.Contains(err.Error(), "duration") {
		t.Fatalf("Load = %v", err)
	}
}

func TestValidateNamesFieldAndAcceptedValues(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   []string
	}{
		{"signing alg", func(c *Config) { c.Auth.SigningAlg = "none" }, []string{"auth.signing_alg", "NOPS_AUTH_SIGNING_ALG", "EdDSA, ES256, RS256, HS256"}},
		{"log level", func(c *Config) { c.Log.Level = "loud" }, []string{"log.level", "debug, info, warn, error"}},
		{"bus kind", func(c *Config) { c.Bus.Kind = "kafka" }, []string{"bus.kind", "NOPS_EVENT_BUS"}},
		{"addr", func(c *Config) { c.HTTP.Addr = "8080" }, []string{"http.addr", "host:port"}},
		{"mtls addr", func(c *Config) { c.HTTP.MTLSAddr = "8443" }, []string{"http.mtls_addr", "host:port"}},
		{"database url", func(c *Config) { c.Database.URL = "mysql://x" }, []string{"database.url", "postgres://"}},
		{"redis url", func(c *Config) { c.Redis.URL = "http://x" }, []string{"redis.url"}},
		{"nats url", func(c *Config) { c.Bus.NATSURL = "http://x" }, []string{"bus.nats_url"}},
		{"atomic batch of one", func(c *Config) { c.Bus.NATSAtomicBatchMin = 1 }, []string{"bus.nats_atomic_batch_min"}},
		{"redis bus without redis", func(c *Config) { c.Bus.Kind = "redis" }, []string{"bus.kind"}},
		{"namespace", func(c *Config) { c.Bus.Namespace = "Bad.NS" }, []string{"bus.namespace"}},
		{"replicas on embedded", func(c *Config) { c.Bus.Replicas = 3 }, []string{"bus.replicas"}},
		{"leeway too large", func(c *Config) { c.Auth.Leeway = Duration(2 * time.Minute) }, []string{"auth.leeway", "60s"}},
		{"short secret", func(c *Config) { c.Auth.SigningAlg = "HS256"; c.Auth.HS256Secret = "short" }, []string{"auth.hs256_secret", "32"}},
		{"secret without HS256", func(c *Config) { c.Auth.HS256Secret = strings.Repeat("k", 32) }, []string{"auth.hs256_secret", "HS256"}},
		{"short admin password", func(c *Config) { c.Auth.BootstrapAdminPassword = "abc" }, []string{"auth.bootstrap_admin_password"}},
		{"body limit", func(c *Config) { c.HTTP.MaxBodyBytes = 10 }, []string{"http.max_body_bytes"}},
		{"zero timeout", func(c *Config) { c.HTTP.ReadTimeout = 0 }, []string{"http.read_timeout"}},
		{"pool", func(c *Config) { c.Database.MinConns = 50 }, []string{"database.min_conns"}},
		{"violation action", func(c *Config) { c.Egress.ViolationAction = "reboot" }, []string{"egress.violation_action", "none, deregister_agent"}},
		{"allow-list without keys", func(c *Config) { c.Egress.AllowlistFile = "/etc/nops/egress" }, []string{"egress.allowlist_keys", "required"}},
		{"keys without allow-list", func(c *Config) { c.Egress.AllowlistKeys = "ops+1+AAAA" }, []string{"egress.allowlist_keys", "egress.allowlist_file"}},
		{"allow-list and flags", func(c *Config) {
			c.Egress.AllowlistFile, c.Egress.AllowlistKeys, c.Egress.AllowPublic, c.Egress.AllowLoopback = "/f", "k", true, "true"
		}, []string{"egress.allow_public", "egress.allow_loopback", "the signed allow-list decides"}},
		{"negative reload", func(c *Config) { c.Egress.AllowlistReloadPeriod = Duration(-time.Second) }, []string{"egress.allowlist_reload_interval"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.mutate(&c)
			err := c.Validate()
			if err == nil {
				t.Fatal("Validate accepted an invalid config")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestRedactedHidesEverySecret(t *testing.T) {
	c := Default()
	c.Database.URL = "postgres://u:hunter2@db/x"
	c.Redis.URL = "redis://:pw@r:6379"
	c.Bus.NATSURL = "nats://u:pw@n:4222"
	c.Auth.HS256Secret = strings.Repeat("s", 40)
	c.Auth.BootstrapAdminPassword = "correct horse battery"
	r := c.Redacted()
	b, err := r.YAML()
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"hunter2", ":pw@", strings.Repeat("s", 40), "correct horse"} {
		if strings.Contains(string(b), secret) {
			t.Errorf("redacted YAML contains %q:\n%s", secret, b)
		}
	}
	if c.Database.URL != "postgres://u:hunter2@db/x" {
		t.Error("Redacted modified the original")
	}
	empty := Default().Redacted()
	if empty.Database.URL != "" {
		t.Error("an unset secret must stay empty, not read [REDACTED]")
	}
}

func TestEverySettingIsDocumented(t *testing.T) {
	for _, f := range Fields() {
		if f.Env == "" || f.Doc == "" || !strings.HasPrefix(f.Env, "NOPS_") {
			t.Errorf("%s: env %q doc %q: every setting needs a NOPS_* variable and a description", f.Path, f.Env, f.Doc)
		}
	}
}

// TestReadmeConfigTable keeps the README's settings table equal to the Config struct. Run
// `go test ./internal/config -run ReadmeConfigTable -update` after changing a setting.
func TestReadmeConfigTable(t *testing.T) {
	path := filepath.Join("..", "..", "README.md")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const begin, end = "<!-- config-table:begin -->\n", "<!-- config-table:end -->"
	s := string(b)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i < 0 || j < i {
		t.Fatalf("README.md lacks the %q … %q markers", strings.TrimSpace(begin), end)
	}
	got := s[i+len(begin) : j]
	want := MarkdownTable()
	if got == want {
		return
	}
	if *update {
		if err := os.WriteFile(path, []byte(s[:i+len(begin)]+want+s[j:]), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatalf("README settings table is stale; run go test ./internal/config -run ReadmeConfigTable -update\n%s", cmp.Diff(want, got))
}
