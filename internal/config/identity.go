package config

import (
	"fmt"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
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
	// Root rotation (POST /v1/identity/ca/rotate; docs/identity.md, "Root rotation").
	RootRotationDelay Duration `yaml:"root_rotation_delay" env:"NOPS_IDENTITY_ROOT_ROTATION_DELAY" doc:"How long a rotated root is in the trust bundle before SVIDs chain to it (at least refresh_interval, less than half intermediate_ttl)."`
	// The mTLS listener's revocation list (docs/mtls.md).
	RevocationRefreshInterval Duration `yaml:"revocation_refresh_interval" env:"NOPS_IDENTITY_REVOCATION_REFRESH_INTERVAL" doc:"How often the mTLS listener reads new SVID revocations from the database: the bound on how long a revocation made on another replica takes to refuse new handshakes and close open connections here (100ms to 1m)."`
	RevocationOverlap         Duration `yaml:"revocation_overlap" env:"NOPS_IDENTITY_REVOCATION_OVERLAP" doc:"How far before the latest revocation read each read of the revocation list starts again, to catch revocations committed late or stamped by a lagging clock (1s to 1h)."`
	// The SPIRE option (docs/identity.md, "SPIRE"). The variable is SPIFFE's standard name with
	// the NOPS_ prefix, so that a SPIFFE_ENDPOINT_SOCKET meant for something else is not picked up.
	SPIFFEEndpointSocket string   `yaml:"spiffe_endpoint_socket" env:"NOPS_SPIFFE_ENDPOINT_SOCKET" doc:"Address of the SPIFFE Workload API (a SPIRE agent's socket: unix:///path or tcp://IP:port). When set, the kernel takes its own X.509-SVID and trust bundle from it instead of the built-in CA, which it neither creates nor loads; its trust domain is the SVID's (trust_domain must then be empty or equal), and POST /v1/identity/svid answers 409."`
	SPIFFEStartTimeout   Duration `yaml:"spiffe_start_timeout" env:"NOPS_IDENTITY_SPIFFE_START_TIMEOUT" doc:"With spiffe_endpoint_socket: how long the kernel waits at start for its first SVID from the Workload API before it gives up (1s to 10m)."`
}

func defaultIdentity() IdentityConfig {
	return IdentityConfig{
		TrustDomain:     "nops.local",
		SVIDTTL:         Duration(time.Hour),
		IntermediateTTL: Duration(30 * 24 * time.Hour),
		RootTTL:         Duration(10 * 365 * 24 * time.Hour),
		RefreshInterval: Duration(time.Minute),
		// Two bundle refresh hints (5 min each): a client that missed one fetch still has the root.
		RootRotationDelay: Duration(10 * time.Minute),

		RevocationRefreshInterval: Duration(2 * time.Second),
		RevocationOverlap:         Duration(time.Minute),

		SPIFFEStartTimeout: Duration(30 * time.Second),
	}
}

// validateIdentity checks the identity section.
func (c Config) validateIdentity(v *validator) {
	in := c.Identity
	if in.SPIFFEEndpointSocket != "" {
		if err := workloadapi.ValidateAddress(in.SPIFFEEndpointSocket); err != nil {
			v.add("identity.spiffe_endpoint_socket", fmt.Sprintf("must be a SPIFFE Workload API address, unix:///path or tcp://IP:port (%v), got %q", err, in.SPIFFEEndpointSocket))
		}
		if d := in.SPIFFEStartTimeout.D(); d < time.Second || d > 10*time.Minute {
			v.add("identity.spiffe_start_timeout", fmt.Sprintf("must be between 1s and 10m, got %s", in.SPIFFEStartTimeout))
		}
	}
	// With SPIRE the trust domain comes from the Workload API's SVID: empty is allowed then.
	fromSPIRE := in.TrustDomain == "" && in.SPIFFEEndpointSocket != ""
	if _, err := spiffeid.TrustDomainFromString(in.TrustDomain); !fromSPIRE && (err != nil || strings.Contains(in.TrustDomain, "://")) {
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
	if d := in.RootRotationDelay.D(); d < in.RefreshInterval.D() || d >= in.IntermediateTTL.D()/2 {
		v.add("identity.root_rotation_delay", fmt.Sprintf("must be at least identity.refresh_interval (%s), so every replica holds a new root before it issues, and less than half identity.intermediate_ttl (%s); got %s",
			in.RefreshInterval, in.IntermediateTTL, in.RootRotationDelay))
	}
	if d := in.RevocationRefreshInterval.D(); d < 100*time.Millisecond || d > time.Minute {
		v.add("identity.revocation_refresh_interval", fmt.Sprintf("must be between 100ms and 1m, got %s", in.RevocationRefreshInterval))
	}
	if d := in.RevocationOverlap.D(); d < time.Second || d > time.Hour {
		v.add("identity.revocation_overlap", fmt.Sprintf("must be between 1s and 1h, got %s", in.RevocationOverlap))
	}
}
