package kernel

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"go.opentelemetry.io/otel/metric"

	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/httpapi"
	"github.com/nops-kernel/nops/internal/identity"
	"github.com/nops-kernel/nops/internal/scope"
	"github.com/nops-kernel/nops/internal/sealbox"
	"github.com/nops-kernel/nops/internal/spire"
)

// Both providers of workload identity serve the identity endpoints.
var (
	_ httpapi.IdentityCA = (*identity.CA)(nil)
	_ httpapi.IdentityCA = (*spire.Source)(nil)
)

// buildWorkloadIdentity sets up where this kernel takes its own SVID and trust bundle (k.wid) and
// what serves the identity endpoints, which it returns:
//
//   - by default the built-in CA (k.ca, refreshed by the "identity ca" job) and a KernelSource
//     over it, renewed at half-life by the "kernel svid" job (k.widRun);
//   - with identity.spiffe_endpoint_socket, the SPIFFE Workload API (SPIRE): k.wid is a
//     spire.Source, renewed by the Workload API's pushes (k.widRun nil) and closed with the
//     kernel. The built-in CA is neither created nor loaded (k.ca nil): the kernel issues no SVIDs
//     (POST /v1/identity/svid answers 409), serves the Workload API's bundle at GET
//     /v1/identity/bundle, and its trust domain is its SVID's.
func (k *Kernel) buildWorkloadIdentity(ctx context.Context, cfg config.Config, st Store) (httpapi.IdentityCA, error) {
	if cfg.Identity.SPIFFEEndpointSocket != "" {
		src, err := startSPIRE(ctx, cfg, k.tel.MeterProvider(), k.logger)
		if err != nil {
			return nil, err
		}
		k.closers = append(k.closers, src.Close)
		k.wid, k.widRun = src, nil
		return src, nil
	}
	// The CA's own changes (creation, renewals, retired roots) are audited in their transaction.
	ca, err := buildIdentity(ctx, cfg, st, k.dom.secrets.kek, k.dom.control.RecordCAChange, k.tel.MeterProvider(), k.logger)
	if err != nil {
		return nil, fmt.Errorf("identity ca: %w", err)
	}
	k.dom.control.CA = ca // POST /v1/identity/ca/rotate
	ks, err := buildWorkloadSource(cfg, ca, k.logger)
	if err != nil {
		return nil, fmt.Errorf("kernel svid: %w", err)
	}
	k.ca, k.wid = ca, ks
	k.widRun = func(ctx context.Context) error { return ks.Run(ctx, time.Second) }
	return ca, nil
}

// startSPIRE connects to the Workload API of identity.spiffe_endpoint_socket and checks its SVID's
// trust domain against identity.trust_domain (empty: any).
func startSPIRE(ctx context.Context, cfg config.Config, mp metric.MeterProvider, logger *slog.Logger) (*spire.Source, error) {
	addr := cfg.Identity.SPIFFEEndpointSocket
	src, err := spire.Start(ctx, spire.Config{
		Addr:         addr,
		StartTimeout: cfg.Identity.SPIFFEStartTimeout.D(),
		Logger:       logger,
		Meter:        mp.Meter("nops/identity"),
	})
	if err != nil {
		return nil, fmt.Errorf("identity.spiffe_endpoint_socket (NOPS_SPIFFE_ENDPOINT_SOCKET): %w", err)
	}
	td := src.TrustDomain()
	if want := cfg.Identity.TrustDomain; want != "" && want != td.Name() {
		_ = src.Close()
		return nil, fmt.Errorf("identity.trust_domain (NOPS_IDENTITY_TRUST_DOMAIN) is %q, but the SVID from the SPIFFE Workload API at %s is of trust domain %q: set identity.trust_domain to %q, or leave it empty to take the SVID's",
			want, addr, td.Name(), td.Name())
	}
	if svid, err := src.GetX509SVID(); err == nil {
		if w, err := scope.ParseWorkload(svid.ID, td); err != nil || w.Kind != scope.KindKernel {
			logger.WarnContext(ctx, "the kernel's SVID from SPIRE names no kernel: register its SPIRE entry as spiffe://<trust-domain>/kernel/<node>, the ID agents and other kernels recognise a kernel by",
				"spiffe_id", svid.ID.String())
		}
	}
	return src, nil
}

// buildIdentity opens the built-in CA of workload identity, creating it at the first start. Its
// private keys are sealed with the key file of signing.kek_file, the one that already seals
// request-signing secrets: one key file to distribute to every replica, not two (kek, reloaded
// when the file changes: secrets.go).
func buildIdentity(ctx context.Context, cfg config.Config, st Store, kek *sealbox.FileKeyring, onChange func(context.Context, identity.Change) error,
	mp metric.MeterProvider, logger *slog.Logger) (*identity.CA, error) {
	ca, err := identity.LoadOrCreate(ctx, st, kek, identity.Config{
		TrustDomain:       cfg.Identity.TrustDomain,
		SVIDTTL:           cfg.Identity.SVIDTTL.D(),
		IntermediateTTL:   cfg.Identity.IntermediateTTL.D(),
		RootTTL:           cfg.Identity.RootTTL.D(),
		RefreshInterval:   cfg.Identity.RefreshInterval.D(),
		RootRotationDelay: cfg.Identity.RootRotationDelay.D(),
		OnChange:          onChange,
		Logger:            logger,
		Meter:             mp.Meter("nops/identity"),
	})
	if err != nil {
		return nil, err
	}
	return ca, nil
}

// identityNode is this kernel's name in its SPIFFE ID: identity.node, else the host name.
func identityNode(cfg config.Config) (string, error) {
	if cfg.Identity.Node != "" {
		return cfg.Identity.Node, nil
	}
	host, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("identity.node is empty and the host name is unknown: %w", err)
	}
	return host, nil
}

// CA returns the kernel's built-in identity CA; nil in SPIRE mode (identity.spiffe_endpoint_socket),
// where the kernel has none. The trust bundle of the mTLS listener is Workload's.
func (k *Kernel) CA() *identity.CA { return k.ca }

// buildWorkloadSource returns where this kernel takes its own SVID and the trust bundle from: with
// the built-in CA, an SVID of spiffe://<trust-domain>/kernel/<node> renewed at half-life (run by
// the "kernel svid" job).
func buildWorkloadSource(cfg config.Config, ca *identity.CA, logger *slog.Logger) (*identity.KernelSource, error) {
	node, err := identityNode(cfg)
	if err != nil {
		return nil, err
	}
	return identity.NewKernelSource(ca, node, logger)
}

// Workload returns where this kernel takes its own X.509-SVID and trust bundle: the identity it
// serves mTLS with and presents to agents (the built-in CA's, or SPIRE's).
func (k *Kernel) Workload() identity.Source { return k.wid }
