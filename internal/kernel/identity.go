package kernel

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"go.opentelemetry.io/otel/metric"

	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/identity"
	"github.com/nops-kernel/nops/internal/sealbox"
)

// buildIdentity opens the built-in CA of workload identity, creating it at the first start. Its
// private keys are sealed with the key file of signing.kek_file, the one that already seals
// request-signing secrets: one key file to distribute to every replica, not two.
func buildIdentity(ctx context.Context, cfg config.Config, st Store, mp metric.MeterProvider, logger *slog.Logger) (*identity.CA, error) {
	box, err := sealbox.LoadOrCreateFile(cfg.KEKPath())
	if err != nil {
		return nil, fmt.Errorf("signing.kek_file: %w", err)
	}
	ca, err := identity.LoadOrCreate(ctx, st, box, identity.Config{
		TrustDomain:     cfg.Identity.TrustDomain,
		SVIDTTL:         cfg.Identity.SVIDTTL.D(),
		IntermediateTTL: cfg.Identity.IntermediateTTL.D(),
		RootTTL:         cfg.Identity.RootTTL.D(),
		RefreshInterval: cfg.Identity.RefreshInterval.D(),
		Logger:          logger,
		Meter:           mp.Meter("nops/identity"),
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

// CA returns the kernel's built-in identity CA: the trust bundle source of the mTLS listener.
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
// serves mTLS with and presents to agents.
func (k *Kernel) Workload() identity.Source { return k.wid }
