package identity

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Source is where a kernel takes its own X.509-SVID and the trust bundle of its trust domain: the
// built-in CA (KernelSource) or the SPIFFE Workload API (SPIRE). The mTLS listener presents
// GetX509SVID's SVID and verifies clients against GetX509BundleForTrustDomain at every handshake;
// kernel → agent calls do the same, so a renewal or a CA rotation needs no restart.
type Source interface {
	x509svid.Source
	x509bundle.Source
	// TrustDomain is the kernel's trust domain: the only one whose SVIDs it accepts.
	TrustDomain() spiffeid.TrustDomain
}

// KernelSource is the Source of a kernel using the built-in CA: an SVID for
// spiffe://<td>/kernel/<node> issued by the CA and renewed at half its lifetime (and whenever the
// CA's authorities change), so the previous one stays valid during the overlap, and the CA's
// current bundle. Create it with NewKernelSource; Run renews.
type KernelSource struct {
	ca     *CA
	node   string
	logger *slog.Logger

	mu   sync.Mutex // guards svid and seq
	svid *x509svid.SVID
	seq  int64 // the CA sequence svid was issued under
}

// NewKernelSource issues the first SVID of node.
func NewKernelSource(ca *CA, node string, logger *slog.Logger) (*KernelSource, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &KernelSource{ca: ca, node: node, logger: logger}
	if err := s.renew(); err != nil {
		return nil, err
	}
	return s, nil
}

// TrustDomain returns the CA's trust domain.
func (s *KernelSource) TrustDomain() spiffeid.TrustDomain { return s.ca.TrustDomain() }

// GetX509BundleForTrustDomain returns the CA's current bundle.
func (s *KernelSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return s.ca.GetX509BundleForTrustDomain(td)
}

// GetX509SVID returns the current SVID. It never blocks on issuance: Run renews in the
// background.
func (s *KernelSource) GetX509SVID() (*x509svid.SVID, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.svid, nil
}

// renew issues a new SVID and makes it current.
func (s *KernelSource) renew() error {
	seq := s.ca.Sequence()
	svid, err := s.ca.IssueKernelSVID(s.node)
	if err != nil {
		return fmt.Errorf("kernel svid: %w", err)
	}
	s.mu.Lock()
	s.svid, s.seq = svid, seq
	s.mu.Unlock()
	return nil
}

// due reports whether the current SVID should be replaced: past half its lifetime, or issued
// before the CA's authorities last changed (a new intermediate or root).
func (s *KernelSource) due(now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	leaf := s.svid.Certificates[0]
	half := leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
	return !now.Before(half) || s.seq != s.ca.Sequence()
}

// Run checks every interval (≤ 0: one second) whether the SVID is due and renews it, until ctx
// ends. A failed renewal is logged and retried at the next check; the current SVID keeps serving
// until it expires.
func (s *KernelSource) Run(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		interval = time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if _, err := s.RenewIfDue(); err != nil && !errors.Is(err, context.Canceled) {
			s.logger.WarnContext(ctx, "renew the kernel's SVID", "error", err)
		}
	}
}

// RenewIfDue renews the SVID when it is past half its lifetime (by the CA's clock) or older than
// the CA's authorities, and reports whether it did.
func (s *KernelSource) RenewIfDue() (bool, error) {
	if !s.due(s.ca.cfg.Now()) {
		return false, nil
	}
	if err := s.renew(); err != nil {
		return false, err
	}
	return true, nil
}
