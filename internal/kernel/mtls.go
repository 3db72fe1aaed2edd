package kernel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"

	"go.opentelemetry.io/otel/metric"

	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/httpapi"
	"github.com/nops-kernel/nops/internal/identity"
	"github.com/nops-kernel/nops/internal/mtls"
)

// The mTLS listener (http.mtls_addr, docs/mtls.md) serves the API handler to workloads that
// present an X.509-SVID. Its TLS side is an mtls.Server: the kernel's own SVID as the server
// certificate, the client's verified against the current trust bundle, revocations read from the
// store. It is built in two steps: the mtls.Server before the API handler (which applies
// revocations made through the API on this replica at once), the listener after it.

// buildMTLSServer builds the TLS side of the mTLS listener and reads the revocation list once,
// so the listener never serves before it knows what is revoked (until then every handshake is
// refused). wid supplies the server's SVID and the bundle, both read at every handshake.
func buildMTLSServer(ctx context.Context, cfg config.Config, wid identity.Source, st mtls.RevocationStore, mp metric.MeterProvider, logger *slog.Logger) (*mtls.Server, error) {
	srv, err := mtls.New(mtls.Config{
		TrustDomain:     wid.TrustDomain(),
		RefreshInterval: cfg.Identity.RevocationRefreshInterval.D(),
		RefreshOverlap:  cfg.Identity.RevocationOverlap.D(),
	}, wid, wid, mtls.Options{Store: st, Logger: logger, MeterProvider: mp})
	if err != nil {
		return nil, err
	}
	if err := srv.Refresh(ctx); err != nil {
		_ = srv.Close()
		return nil, fmt.Errorf("read the svid revocations: %w", err)
	}
	return srv, nil
}

// listenMTLS opens http.mtls_addr with the perimeter's connection caps and prepares the server
// of the mTLS listener: the API handler, marked so that the dispatcher authenticates callers by
// their SVID, with the API listener's timeouts.
func (k *Kernel) listenMTLS(cfg config.Config, handler http.Handler) error {
	raw, err := net.Listen("tcp", cfg.HTTP.MTLSAddr)
	if err != nil {
		return fmt.Errorf("listen on %s (http.mtls_addr): %w", cfg.HTTP.MTLSAddr, err)
	}
	k.closers = append(k.closers, func() error {
		if err := raw.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			return err
		}
		return nil
	})
	if k.mtlsLn, err = k.perim.listener(cfg, raw, k.tel.MeterProvider(), k.logger); err != nil {
		return fmt.Errorf("mtls listener: %w", err)
	}
	h, err := httpapi.MTLS(handler, httpapi.Workloads{TrustDomain: k.wid.TrustDomain()})
	if err != nil {
		return err
	}
	k.mtlsSrv = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: k.srv.ReadHeaderTimeout,
		ReadTimeout:       k.srv.ReadTimeout,
		WriteTimeout:      k.srv.WriteTimeout,
		IdleTimeout:       k.srv.IdleTimeout,
		MaxHeaderBytes:    k.srv.MaxHeaderBytes,
		ErrorLog:          k.srv.ErrorLog,
	}
	// Configure installs the TLS configuration and the connection hooks that let a revocation
	// close the open connections of the identity it revokes.
	k.mtls.Configure(k.mtlsSrv)
	return nil
}

// serveMTLS serves the mTLS listener until it is shut down.
func (k *Kernel) serveMTLS(ctx context.Context) {
	k.logger.InfoContext(ctx, "nops mtls listener serving", "addr", k.MTLSAddr(), "trust_domain", k.wid.TrustDomain().String())
	if err := k.mtlsSrv.ServeTLS(k.mtlsLn, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		k.logger.Error("mtls listener stopped", "error", err)
	}
}

// revoker is what the revocation endpoint applies a new revocation through on this replica: the
// mTLS listener, or nil when it is off (not a nil *mtls.Server, which would make a non-nil
// interface).
func (k *Kernel) revoker() interface {
	Revoke(ctx context.Context, rs ...mtls.Revocation) error
} {
	if k.mtls == nil {
		return nil
	}
	return k.mtls
}

// MTLSAddr returns the address of the mTLS listener, "" when it is off.
func (k *Kernel) MTLSAddr() string {
	if k.mtlsLn == nil {
		return ""
	}
	return k.mtlsLn.Addr().String()
}

// MTLS returns the TLS side of the mTLS listener (revocations, tracked connections), nil when
// the listener is off.
func (k *Kernel) MTLS() *mtls.Server { return k.mtls }
