package e2e

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
	"github.com/nops-kernel/nops/internal/testutil/faultproxy"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

func TestHealthEndpointsEmbedded(t *testing.T) {
	k := kerneltest.Start(t)
	for _, path := range []string{"/health", "/_readyz", "/healthz"} {
		resp, body := k.Do(t, "GET", path, nil)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %d %s", path, resp.StatusCode, body)
		}
	}
	_, body := k.Do(t, "GET", "/healthz", nil)
	var hz struct {
		Version string `json:"version"`
		Checks  []struct {
			Name      string  `json:"name"`
			Status    string  `json:"status"`
			LatencyMs float64 `json:"latency_ms"`
		} `json:"checks"`
	}
	if err := json.Unmarshal(body, &hz); err != nil {
		t.Fatal(err)
	}
	names := map[string]string{}
	for _, c := range hz.Checks {
		names[c.Name] = c.Status
	}
	if names["database"] != "up" || names["bus"] != "up" || len(names) != 2 {
		t.Errorf("healthz checks %+v, want database and bus up (no redis configured)", hz.Checks)
	}
	if hz.Version != "test" {
		t.Errorf("version %q", hz.Version)
	}
}

func readyStatus(t *testing.T, k *kerneltest.Kernel) int {
	resp, _ := k.Do(t, "GET", "/_readyz", nil)
	return resp.StatusCode
}

// TestReadinessFollowsDependencyOutages cuts each external dependency with a fault proxy and
// requires /_readyz to turn 503 within 5 s, then 200 within 5 s of the dependency returning,
// without restarting the kernel.
func TestReadinessFollowsDependencyOutages(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, c *config.Config) *faultproxy.Proxy
	}{
		{"postgres", func(t *testing.T, c *config.Config) *faultproxy.Proxy {
			u := services.Postgres(t)
			p := faultproxy.New(t, services.HostPort(t, u))
			c.Database.URL = services.WithHost(t, u, p.Addr())
			return p
		}},
		{"redis", func(t *testing.T, c *config.Config) *faultproxy.Proxy {
			u := services.RedisURL(t)
			p := faultproxy.New(t, services.HostPort(t, u))
			c.Redis.URL = services.WithHost(t, u, p.Addr())
			return p
		}},
		{"nats", func(t *testing.T, c *config.Config) *faultproxy.Proxy {
			u, ns := services.NATSNamespace(t)
			p := faultproxy.New(t, services.HostPort(t, u))
			c.Bus.NATSURL = services.WithHost(t, u, p.Addr())
			c.Bus.Namespace = ns
			return p
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var proxy *faultproxy.Proxy
			k := kerneltest.Start(t, func(c *config.Config) {
				proxy = tt.setup(t, c)
				c.Health.CacheTTL = config.Duration(250 * time.Millisecond)
				c.Health.CheckTimeout = config.Duration(time.Second)
			})
			if got := readyStatus(t, k); got != http.StatusOK {
				t.Fatalf("before the outage: %d", got)
			}
			proxy.Cut()
			took := kerneltest.WaitFor(t, 5*time.Second, "readyz 503 after the cut", func() bool { return readyStatus(t, k) == http.StatusServiceUnavailable })
			t.Logf("%s cut: 503 after %s", tt.name, took)
			resp, body := k.Do(t, "GET", "/_readyz", nil)
			var rd struct {
				Checks []struct{ Name, Status string } `json:"checks"`
			}
			_ = json.Unmarshal(body, &rd)
			down := ""
			for _, c := range rd.Checks {
				if c.Status == "down" {
					down += c.Name
				}
			}
			want := map[string]string{"postgres": "database", "redis": "redis", "nats": "bus"}[tt.name]
			if resp.StatusCode == http.StatusServiceUnavailable && down != want {
				t.Errorf("down checks %q, want only %q", down, want)
			}
			proxy.Restore()
			took = kerneltest.WaitFor(t, 5*time.Second, "readyz 200 after restore", func() bool { return readyStatus(t, k) == http.StatusOK })
			t.Logf("%s restored: 200 after %s", tt.name, took)
		})
	}
}

// TestReplicasShareKeysAndUsers runs two kernels against one PostgreSQL database, as replicas
// behind a load balancer: the bootstrap admin is created once, and a token issued by either
// replica is accepted by the other.
func TestReplicasShareKeysAndUsers(t *testing.T) {
	dbURL := services.Postgres(t)
	// Replicas share the key-encryption key: the CA's keys in the database are sealed with it.
	kek := filepath.Join(t.TempDir(), "kek.json")
	shared := func(c *config.Config) { c.Database.URL, c.Signing.KEKFile = dbURL, kek }
	a := kerneltest.Start(t, shared)
	b := kerneltest.Start(t, shared)
	for _, pair := range []struct{ issuer, verifier *kerneltest.Kernel }{{a, b}, {b, a}} {
		tok := pair.issuer.Token(t, "")
		resp, body := pair.verifier.Do(t, "GET", "/v1/auth/whoami", nil, "Authorization: Bearer "+tok)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("token from one replica refused by the other: %d %s", resp.StatusCode, body)
		}
	}
	_, ja := a.Do(t, "GET", "/.well-known/jwks.json", nil)
	_, jb := b.Do(t, "GET", "/.well-known/jwks.json", nil)
	if string(ja) != string(jb) {
		t.Errorf("replicas publish different key sets:\n%s\n%s", ja, jb)
	}
}
