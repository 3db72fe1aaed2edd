// Package spire is the kernel's SPIRE option: its own X.509-SVID and the trust bundle of its trust
// domain taken from the SPIFFE Workload API (the socket of a SPIRE agent, or of anything serving
// that API) instead of the built-in CA (docs/identity.md, "SPIRE").
//
// Source wraps go-spiffe's workloadapi.X509Source: Start waits for the first SVID (with a
// deadline), after which the Workload API pushes every renewal and bundle change over the open
// stream and go-spiffe swaps them in; nothing here renews or polls. The trust domain is the first
// SVID's and does not change while the kernel runs. Source also stands in for the built-in CA at the
// identity endpoints: Sign refuses (agents get their SVIDs from their own SPIRE agent) and
// BundleJWKS renders the Workload API's bundle in the SPIFFE bundle format.
//
// Who may import it: internal/kernel (wiring) and tests; spire/spiretest is a fake Workload API for
// tests. It imports identity and errs of the project.
//
// Concurrency: a Source is safe for concurrent use. One goroutine, started by Start and ended by
// Close, watches the updates to log and count them.
package spire

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/identity"
)

// DefaultStartTimeout is how long Start waits for the first SVID when Config.StartTimeout is 0.
const DefaultStartTimeout = 30 * time.Second

// SignRefusal is the message of Sign's conflict: the kernel issues no SVIDs in SPIRE mode.
const SignRefusal = "this kernel's identities come from SPIRE: agents get SVIDs from their SPIRE agent (the SPIFFE Workload API), not from this kernel"

// Config configures Start.
type Config struct {
	// Addr is the Workload API's address, as SPIFFE_ENDPOINT_SOCKET takes it: unix:///path or
	// tcp://IP:port. Required.
	Addr string
	// StartTimeout bounds the wait for the first SVID; 0: DefaultStartTimeout.
	StartTimeout time.Duration
	Logger       *slog.Logger // nil: discard
	Meter        metric.Meter // nil: no metrics
}

// Source is this kernel's identity.Source over the SPIFFE Workload API. Create it with Start,
// release it with Close.
type Source struct {
	xs      *workloadapi.X509Source
	td      spiffeid.TrustDomain
	addr    string
	logger  *slog.Logger
	updates metric.Int64Counter // nil: no metrics

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error

	mu     sync.Mutex         // guards leaf, roots and jwks
	leaf   []byte             // DER of the SVID leaf last seen
	roots  *x509bundle.Bundle // the bundle last seen
	jwks   *renderedBundle    // BundleJWKS's rendering of jwksOf
	jwksOf *x509bundle.Bundle
}

type renderedBundle struct {
	body, pem []byte
	etag      string
}

var _ identity.Source = (*Source)(nil)

// Start connects to the Workload API at cfg.Addr and waits, at most cfg.StartTimeout or until ctx
// ends, for its first X.509-SVID. The error of a Workload API that does not answer (or answers
// without an identity for this process) names the address and the last error of the watch.
func Start(ctx context.Context, cfg Config) (*Source, error) {
	if err := workloadapi.ValidateAddress(cfg.Addr); err != nil {
		return nil, fmt.Errorf("spiffe workload api address %q: %w", cfg.Addr, err)
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = DefaultStartTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Source{addr: cfg.Addr, logger: cfg.Logger, stop: make(chan struct{}), done: make(chan struct{})}
	if cfg.Meter != nil {
		var err error
		if s.updates, err = cfg.Meter.Int64Counter("nops_identity_spire_updates_total",
			metric.WithDescription("Changes of the kernel's X.509-SVID or trust bundle pushed by the SPIFFE Workload API, by change (svid, bundle)."),
			metric.WithUnit("{update}")); err != nil {
			return nil, fmt.Errorf("spire: updates counter: %w", err)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()
	log := &watchLog{logger: cfg.Logger}
	xs, err := workloadapi.NewX509Source(wctx, workloadapi.WithClientOptions(
		workloadapi.WithAddr(cfg.Addr), workloadapi.WithLogger(log)))
	if err != nil {
		if last := log.last(); last != "" && wctx.Err() != nil {
			return nil, fmt.Errorf("no X.509-SVID from the SPIFFE Workload API at %s within %s (last error: %s): %w", cfg.Addr, cfg.StartTimeout, last, err)
		}
		return nil, fmt.Errorf("no X.509-SVID from the SPIFFE Workload API at %s within %s: %w", cfg.Addr, cfg.StartTimeout, err)
	}
	svid, err := xs.GetX509SVID()
	if err != nil {
		_ = xs.Close()
		return nil, fmt.Errorf("spiffe workload api at %s: %w", cfg.Addr, err)
	}
	s.xs, s.td = xs, svid.ID.TrustDomain()
	bundle, err := xs.GetX509BundleForTrustDomain(s.td)
	if err != nil {
		_ = xs.Close()
		return nil, fmt.Errorf("spiffe workload api at %s gave no bundle for the SVID's trust domain %s: %w", cfg.Addr, s.td, err)
	}
	s.leaf, s.roots = svid.Certificates[0].Raw, bundle
	cfg.Logger.InfoContext(ctx, "kernel identity from the SPIFFE Workload API", "addr", cfg.Addr,
		"spiffe_id", svid.ID.String(), "serial", svid.Certificates[0].SerialNumber.Text(16),
		"expires", svid.Certificates[0].NotAfter.UTC(), "roots", len(bundle.X509Authorities()))
	log.started.Store(true)
	go s.watch()
	return s, nil
}

// TrustDomain returns the trust domain of the first SVID.
func (s *Source) TrustDomain() spiffeid.TrustDomain { return s.td }

// GetX509SVID returns the Workload API's current SVID for this process.
func (s *Source) GetX509SVID() (*x509svid.SVID, error) { return s.xs.GetX509SVID() }

// GetX509BundleForTrustDomain returns the Workload API's current bundle of the kernel's trust
// domain; any other trust domain is an error, as with the built-in CA (federated bundles are not
// trusted).
func (s *Source) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if td != s.td {
		return nil, fmt.Errorf("spire: no bundle for trust domain %q: the kernel's is %q", td, s.td)
	}
	return s.xs.GetX509BundleForTrustDomain(td)
}

// Close stops watching and drops the connection to the Workload API. Safe to call more than once.
func (s *Source) Close() error {
	s.closeOnce.Do(func() {
		close(s.stop)
		<-s.done
		s.closeErr = s.xs.Close()
	})
	return s.closeErr
}

// watch logs and counts every change of the SVID or the bundle until Close. go-spiffe signals
// updates on a channel of capacity one, so bursts coalesce; what is compared is the state.
func (s *Source) watch() {
	defer close(s.done)
	for {
		select {
		case <-s.stop:
			return
		case <-s.xs.Updated():
		}
		s.observe()
	}
}

func (s *Source) observe() {
	svid, err := s.xs.GetX509SVID()
	if err != nil {
		return
	}
	bundle, bundleErr := s.xs.GetX509BundleForTrustDomain(s.td)
	s.mu.Lock()
	svidChanged := !bytes.Equal(s.leaf, svid.Certificates[0].Raw)
	bundleChanged := bundleErr == nil && !bundle.Equal(s.roots)
	s.leaf = svid.Certificates[0].Raw
	if bundleChanged {
		s.roots = bundle
	}
	s.mu.Unlock()
	ctx := context.Background()
	if svidChanged {
		leaf := svid.Certificates[0]
		s.count(ctx, "svid")
		s.logger.Info("kernel SVID renewed by the SPIFFE Workload API", "spiffe_id", svid.ID.String(),
			"serial", leaf.SerialNumber.Text(16), "expires", leaf.NotAfter.UTC())
		if svid.ID.TrustDomain() != s.td {
			s.logger.Error("the SPIFFE Workload API now gives an SVID of another trust domain; the kernel keeps trusting only its own: restart it to follow",
				"spiffe_id", svid.ID.String(), "trust_domain", s.td.Name())
		}
	}
	if bundleErr != nil {
		s.logger.Error("the SPIFFE Workload API gives no bundle for the kernel's trust domain; clients can no longer be verified", "trust_domain", s.td.Name(), "error", bundleErr)
	}
	if bundleChanged {
		s.count(ctx, "bundle")
		s.logger.Info("trust bundle changed by the SPIFFE Workload API", "trust_domain", s.td.Name(), "roots", len(bundle.X509Authorities()))
	}
}

func (s *Source) count(ctx context.Context, change string) {
	if s.updates != nil {
		s.updates.Add(ctx, 1, metric.WithAttributes(attribute.String("change", change)))
	}
}

// Sign refuses: in SPIRE mode the kernel is no certificate authority. The identity endpoint
// answers 409 with SignRefusal.
func (s *Source) Sign([]byte, spiffeid.ID, time.Duration) (identity.SVID, error) {
	return identity.SVID{}, errs.New(errs.Conflict, "%s", SignRefusal)
}

// BundleJWKS returns the Workload API's bundle of the trust domain in the SPIFFE bundle format (a
// JWK Set, spiffe_refresh_hint as the built-in CA's; no spiffe_sequence: the Workload API does not
// convey SPIRE's), and an entity tag of those bytes, so replicas whose agents hold the same bundle
// serve the same body and tag.
func (s *Source) BundleJWKS() (body []byte, etag string) {
	r := s.rendered()
	return r.body, r.etag
}

// BundlePEM returns the roots of the bundle as PEM certificates.
func (s *Source) BundlePEM() []byte { return s.rendered().pem }

// rendered renders the current bundle once per change; when the Workload API gives none (it never
// should once started), the last rendering keeps serving.
func (s *Source) rendered() *renderedBundle {
	b, err := s.xs.GetX509BundleForTrustDomain(s.td)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil || b == s.jwksOf {
		if s.jwks == nil {
			return &renderedBundle{body: []byte(`{"keys":[]}`), etag: `"empty"`}
		}
		return s.jwks
	}
	r, err := render(s.td, b.X509Authorities())
	if err != nil {
		s.logger.Error("render the SPIFFE bundle", "error", err)
		if s.jwks != nil {
			return s.jwks
		}
		return &renderedBundle{body: []byte(`{"keys":[]}`), etag: `"empty"`}
	}
	s.jwks, s.jwksOf = r, b
	return r
}

func render(td spiffeid.TrustDomain, roots []*x509.Certificate) (*renderedBundle, error) {
	sb := spiffebundle.FromX509Authorities(td, roots)
	sb.SetRefreshHint(identity.BundleRefreshHint)
	body, err := sb.Marshal()
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(body)
	r := &renderedBundle{body: body, etag: `"` + hex.EncodeToString(sum[:16]) + `"`}
	for _, c := range roots {
		r.pem = append(r.pem, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return r, nil
}

// watchLog receives go-spiffe's log lines. Watch failures are kept (the last one explains a Start
// that timed out) and logged: at debug while Start waits, as a warning once the kernel runs on
// the source (the Workload API went away; go-spiffe retries with a backoff and the current SVID
// keeps serving until it expires).
type watchLog struct {
	logger  *slog.Logger
	started atomic.Bool
	mu      sync.Mutex
	err     string
}

func (l *watchLog) last() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

func (l *watchLog) Debugf(format string, args ...any) {}
func (l *watchLog) Infof(format string, args ...any)  { l.logger.Info(fmt.Sprintf(format, args...)) }
func (l *watchLog) Warnf(format string, args ...any)  { l.logger.Warn(fmt.Sprintf(format, args...)) }
func (l *watchLog) Errorf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.mu.Lock()
	l.err = msg
	l.mu.Unlock()
	if l.started.Load() {
		l.logger.Warn("spiffe workload api", "error", msg)
		return
	}
	l.logger.Debug("spiffe workload api", "error", msg)
}
