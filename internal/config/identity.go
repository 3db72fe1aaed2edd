package config

import (
	"fmt"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// IdentityConfig configures workload identity: SPIFFE IDs and the built-in CA issuing X.509-SVIDs
// (docs/identity.md). The CA's private keys are sealed with the key file of signing.kek_file.
type IdentityConfig struct {
	TrustDomain     string   `yaml:"trust_domain" env:"NOPS_IDENTITY_TRUST_DOMAIN" doc:"SPIFFE trust domain of agents and kernels (their IDs are spiffe://TRUST_DOMAIN/…): lower-case letters, digits, '.', '-' and '_'. Changing it starts a new CA."`
	Node            string   `yaml:"node" env:"NOPS_IDENTITY_NODE" doc:"This kernel's name in its SPIFFE ID spiffe://TRUST_DOMAIN/kernel/NODE; empty: the host name."`
	SVIDTTL         Duration `yaml:"svid_ttl" env:"NOPS_IDENTITY_SVID_TTL" doc:"Lifetime of an issued X.509-SVID, and the longest a client may ask for (1m to 24h)."`
	IntermediateTTL Duration `yaml:"intermediate_ttl" env:"NOPS_IDENTITY_INTERMEDIATE_TTL" doc:"Lifetime of the CA's intermediate certificate (at least twice svid_ttl); a new one replaces it at half its lifetime."`
	RootTTL         Duration `yaml:"root_ttl" env:"NOPS_IDENTITY_ROOT_TTL" doc:"Lifetime of the CA's root certificate (at least twice intermediate_ttl)."`
	RefreshInterval Duration `yaml:"refresh_interval" env:"NOPS_IDENTITY_REFRESH_INTERVAL" doc:"How often each replica reloads the CA from the database (authorities other replicas added) and renews its intermediate when due."`
}

func defaultIdentity() IdentityConfig {
	return IdentityConfig{
		TrustDomain:     "nops.local",
		SVIDTTL:         Duration(time.Hour),
		IntermediateTTL: Duration(30 * 24 * time.Hour),
		RootTTL:         Duration(10 * 365 * 24 * time.Hour),
		RefreshInterval: Duration(time.Minute),
	}
}

// validateIdentity checks the identity section.
func (c Config) validateIdentity(v *validator) {
	in := c.Identity
	if _, err := spiffeid.TrustDomainFromString(in.TrustDomain); err != nil || strings.Contains(in.TrustDomain, "://") {
		v.add("identity.trust_domain", fmt.Sprintf("must be a SPIFFE trust domain name such as nops.local (lower-case letters, digits, '.', '-', '_'; no scheme), got %q", in.TrustDomain))
	}
	if in.Node != "" {
		if _, err := spiffeid.FromSegments(spiffeid.RequireTrustDomainFromString("node.check"), in.Node); err != nil {
			v.add("identity.node", fmt.Sprintf("must be one SPIFFE ID path segment (letters, digits, '.', '-', '_'), got %q", in.Node))
		}
	}
	if in.SVIDTTL.D() < time.Minute || in.SVIDTTL.D() > 24*time.Hour {
		v.add("identity.svid_ttl", fmt.Sprintf("must be between 1m and 24h, got %s", in.SVIDTTL))
	}
	if in.IntermediateTTL.D() < 2*in.SVIDTTL.D() {
		v.add("identity.intermediate_ttl", fmt.Sprintf("must be at least twice identity.svid_ttl (%s), got %s", in.SVIDTTL, in.IntermediateTTL))
	}
	if in.RootTTL.D() < 2*in.IntermediateTTL.D() {
		v.add("identity.root_ttl", fmt.Sprintf("must be at least twice identity.intermediate_ttl (%s), got %s", in.IntermediateTTL, in.RootTTL))
	}
	if in.RefreshInterval.D() < time.Second || in.RefreshInterval.D() > time.Hour {
		v.add("identity.refresh_interval", fmt.Sprintf("must be between 1s and 1h, got %s", in.RefreshInterval))
	}
}
