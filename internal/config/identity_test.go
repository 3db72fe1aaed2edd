package config

import (
	"strings"
	"testing"
	"time"
)

func TestValidateIdentity(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   []string // "" when valid
	}{
		{"default", func(*Config) {}, nil},
		{"another trust domain and node", func(c *Config) { c.Identity.TrustDomain = "prod.example.com"; c.Identity.Node = "kernel-0" }, nil},
		{"empty trust domain", func(c *Config) { c.Identity.TrustDomain = "" }, []string{"identity.trust_domain", "NOPS_IDENTITY_TRUST_DOMAIN"}},
		{"upper-case trust domain", func(c *Config) { c.Identity.TrustDomain = "Nops.Local" }, []string{"identity.trust_domain"}},
		{"trust domain with a scheme", func(c *Config) { c.Identity.TrustDomain = "spiffe://nops.local" }, []string{"identity.trust_domain", "no scheme"}},
		{"node with a slash", func(c *Config) { c.Identity.Node = "a/b" }, []string{"identity.node", "path segment"}},
		{"svid ttl too short", func(c *Config) { c.Identity.SVIDTTL = Duration(time.Second) }, []string{"identity.svid_ttl", "1m and 24h"}},
		{"svid ttl too long", func(c *Config) { c.Identity.SVIDTTL = Duration(25 * time.Hour) }, []string{"identity.svid_ttl"}},
		{"intermediate below two svids", func(c *Config) { c.Identity.IntermediateTTL = Duration(90 * time.Minute) }, []string{"identity.intermediate_ttl", "twice"}},
		{"root below two intermediates", func(c *Config) { c.Identity.RootTTL = Duration(40 * 24 * time.Hour) }, []string{"identity.root_ttl", "twice"}},
		{"refresh interval zero", func(c *Config) { c.Identity.RefreshInterval = 0 }, []string{"identity.refresh_interval"}},
		{"revocation refresh too fast", func(c *Config) { c.Identity.RevocationRefreshInterval = Duration(time.Millisecond) }, []string{"identity.revocation_refresh_interval", "100ms and 1m"}},
		{"revocation refresh too slow", func(c *Config) { c.Identity.RevocationRefreshInterval = Duration(time.Hour) }, []string{"identity.revocation_refresh_interval"}},
		{"revocation overlap zero", func(c *Config) { c.Identity.RevocationOverlap = 0 }, []string{"identity.revocation_overlap", "1s and 1h"}},
		{"spire unix socket", func(c *Config) { c.Identity.SPIFFEEndpointSocket = "unix:///run/spire/agent.sock" }, nil},
		{"spire tcp socket", func(c *Config) { c.Identity.SPIFFEEndpointSocket = "tcp://127.0.0.1:8082" }, nil},
		{"spire with an empty trust domain", func(c *Config) {
			c.Identity.SPIFFEEndpointSocket = "unix:///run/spire/agent.sock"
			c.Identity.TrustDomain = ""
		}, nil},
		{"spire socket without a scheme", func(c *Config) { c.Identity.SPIFFEEndpointSocket = "/run/spire/agent.sock" }, []string{"identity.spiffe_endpoint_socket", "NOPS_SPIFFE_ENDPOINT_SOCKET", "unix:///path"}},
		{"spire tcp socket with a host name", func(c *Config) { c.Identity.SPIFFEEndpointSocket = "tcp://localhost:8082" }, []string{"identity.spiffe_endpoint_socket"}},
		{"spire http socket", func(c *Config) { c.Identity.SPIFFEEndpointSocket = "http://127.0.0.1:8082" }, []string{"identity.spiffe_endpoint_socket"}},
		{"spire start timeout too short", func(c *Config) {
			c.Identity.SPIFFEEndpointSocket = "unix:///run/spire/agent.sock"
			c.Identity.SPIFFEStartTimeout = Duration(time.Millisecond)
		}, []string{"identity.spiffe_start_timeout", "1s and 10m"}},
		{"spire with an invalid trust domain", func(c *Config) {
			c.Identity.SPIFFEEndpointSocket = "unix:///run/spire/agent.sock"
			c.Identity.TrustDomain = "Example.Org"
		}, []string{"identity.trust_domain"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.mutate(&c)
			err := c.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate accepted an invalid identity section")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}
