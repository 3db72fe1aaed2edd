package mtls

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// meterName is the instrumentation scope of the mTLS metrics.
const meterName = "github.com/nops-kernel/nops/internal/mtls"

// Defaults for a zero Config.
const (
	DefaultRefreshInterval = 2 * time.Second
	DefaultRefreshOverlap  = time.Minute
)

// Config is the listener's policy.
type Config struct {
	// TrustDomain is the only trust domain whose SVIDs are accepted. Required.
	TrustDomain spiffeid.TrustDomain
	// RefreshInterval is how often Run reads new revocations from the store: the bound on how
	// long a revocation recorded by another replica takes to refuse new handshakes and close open
	// connections here. Zero: DefaultRefreshInterval.
	RefreshInterval time.Duration
	// RefreshOverlap is how far back before the latest revocation read each refresh reads again,
	// to catch revocations committed late or stamped by a lagging clock. Zero:
	// DefaultRefreshOverlap.
	RefreshOverlap time.Duration
	// NextProtos are the ALPN protocols offered. Nil: h2 and http/1.1.
	NextProtos []string
}

// Options are the optional dependencies.
type Options struct {
	// Store holds the revocations shared by all replicas. Nil: only revocations passed to Revoke
	// count (a single process, or tests). With a store, handshakes are refused until the first
	// successful Refresh.
	Store RevocationStore
	// Logger receives refusals, refresh failures and connections closed by a revocation. Nil:
	// discarded.
	Logger *slog.Logger
	// MeterProvider supplies the metrics. Nil: none.
	MeterProvider metric.MeterProvider
	// Now is the clock of certificate validity checks and the expiry gauge. Nil: time.Now.
	Now func() time.Time
}

// Server is the TLS side of the kernel's mTLS listener: the server configuration, the
// verification of client SVIDs, the revocation list and the connections it must close. See the
// package documentation.
type Server struct {
	td       spiffeid.TrustDomain
	svid     x509svid.Source
	bundle   x509bundle.Source
	store    RevocationStore
	interval time.Duration
	overlap  time.Duration
	logger   *slog.Logger
	now      func() time.Time

	base  *tls.Config // cloned for every handshake; never handed out
	revs  *revocations
	conns *tracker

	handshakes metric.Int64Counter
	closed     metric.Int64Counter
	refreshes  metric.Int64Counter
	gaugeReg   metric.Registration

	closeOnce sync.Once
	closeErr  error
}

// New returns a Server presenting the SVIDs of svid (read at every handshake, so a renewed SVID
// is served from the next handshake on) and verifying clients against the bundles of bundle
// (also read at every handshake).
func New(cfg Config, svid x509svid.Source, bundle x509bundle.Source, opts Options) (*Server, error) {
	switch {
	case cfg.TrustDomain.IsZero():
		return nil, errors.New("mtls: a trust domain is required")
	case svid == nil:
		return nil, errors.New("mtls: an SVID source is required")
	case bundle == nil:
		return nil, errors.New("mtls: a bundle source is required")
	case cfg.RefreshInterval < 0 || cfg.RefreshOverlap < 0:
		return nil, errors.New("mtls: refresh interval and overlap must not be negative")
	}
	if cfg.RefreshInterval == 0 {
		cfg.RefreshInterval = DefaultRefreshInterval
	}
	if cfg.RefreshOverlap == 0 {
		cfg.RefreshOverlap = DefaultRefreshOverlap
	}
	if cfg.NextProtos == nil {
		cfg.NextProtos = []string{"h2", "http/1.1"}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MeterProvider == nil {
		opts.MeterProvider = noop.NewMeterProvider()
	}
	s := &Server{
		td: cfg.TrustDomain, svid: svid, bundle: bundle, store: opts.Store,
		interval: cfg.RefreshInterval, overlap: cfg.RefreshOverlap,
		logger: opts.Logger, now: opts.Now,
		revs:  newRevocations(opts.Store == nil),
		conns: &tracker{conns: map[net.Conn]*connEntry{}},
	}
	s.base = &tls.Config{
		// TLS 1.3 only: a TLS 1.2 client sends its certificate in clear text, and with it the
		// tenant and agent IDs in the SPIFFE ID.
		MinVersion:     tls.VersionTLS13,
		NextProtos:     append([]string(nil), cfg.NextProtos...),
		GetCertificate: tlsconfig.GetCertificate(svid),
		// Requested, not required: with RequireAnyClientCert crypto/tls would refuse a missing
		// certificate before any callback runs, and the refusal could not be counted. Verify
		// refuses it instead, so the certificate is required all the same.
		ClientAuth: tls.RequestClientCert,
		// Without the per-connection hook (a config used outside Configure), every handshake is
		// still verified; it is then refused as untracked below, since it could not be closed
		// on revocation.
		VerifyConnection: func(cs tls.ConnectionState) error { return s.verifyConnection(nil, cs) },
	}
	if err := s.instrument(opts.MeterProvider); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Server) instrument(mp metric.MeterProvider) error {
	meter := mp.Meter(meterName)
	var err error
	if s.handshakes, err = meter.Int64Counter("nops_mtls_handshakes_total",
		metric.WithDescription("Client certificate verifications on the mTLS listener, by result (accepted, refused) and reason of refusal.")); err != nil {
		return fmt.Errorf("mtls: create handshakes counter: %w", err)
	}
	if s.closed, err = meter.Int64Counter("nops_mtls_revoked_connections_closed_total",
		metric.WithDescription("Open mTLS connections closed because their client's SVID was revoked.")); err != nil {
		return fmt.Errorf("mtls: create closed counter: %w", err)
	}
	if s.refreshes, err = meter.Int64Counter("nops_mtls_revocation_refreshes_total",
		metric.WithDescription("Reads of the revocation store, by result (success, failure).")); err != nil {
		return fmt.Errorf("mtls: create refreshes counter: %w", err)
	}
	expiry, err := meter.Float64ObservableGauge("nops_mtls_svid_expiry_seconds", metric.WithUnit("s"),
		metric.WithDescription("Seconds until the SVID served on the mTLS listener expires (negative once expired)."))
	if err != nil {
		return fmt.Errorf("mtls: create expiry gauge: %w", err)
	}
	age, err := meter.Float64ObservableGauge("nops_mtls_revocations_age_seconds", metric.WithUnit("s"),
		metric.WithDescription("Seconds since the revocation list was last read from the store."))
	if err != nil {
		return fmt.Errorf("mtls: create revocations age gauge: %w", err)
	}
	count, err := meter.Int64ObservableGauge("nops_mtls_revocations",
		metric.WithDescription("Revocations in force on this replica (serials and SPIFFE IDs)."))
	if err != nil {
		return fmt.Errorf("mtls: create revocations gauge: %w", err)
	}
	s.gaugeReg, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		now := s.now()
		if sv, err := s.svid.GetX509SVID(); err == nil && len(sv.Certificates) > 0 {
			o.ObserveFloat64(expiry, sv.Certificates[0].NotAfter.Sub(now).Seconds(),
				metric.WithAttributes(attribute.String("spiffe_id", sv.ID.String())))
		}
		if s.store != nil {
			if at := s.revs.lastRefresh(); !at.IsZero() {
				o.ObserveFloat64(age, now.Sub(at).Seconds())
			}
		}
		o.ObserveInt64(count, int64(s.revs.len()))
		return nil
	}, expiry, age, count)
	if err != nil {
		return fmt.Errorf("mtls: register gauges: %w", err)
	}
	return nil
}

// Close unregisters the gauges. Connections and the configuration keep working.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		if s.gaugeReg != nil {
			s.closeErr = s.gaugeReg.Unregister()
		}
	})
	return s.closeErr
}

// TLSConfig returns the listener's configuration. It works only on an http.Server prepared by
// Configure, whose hooks track connections for revocation; elsewhere every handshake is refused
// (ReasonUntracked). Prefer Configure, which installs it.
func (s *Server) TLSConfig() *tls.Config {
	c := s.base.Clone()
	c.GetConfigForClient = s.configForClient
	return c
}

// Configure prepares hs to serve the mTLS listener: it sets TLSConfig and chains its ConnContext
// and ConnState hooks before any hs already has. Serve with hs.ServeTLS(ln, "", "").
func (s *Server) Configure(hs *http.Server) {
	hs.TLSConfig = s.TLSConfig()
	prevCtx, prevState := hs.ConnContext, hs.ConnState
	hs.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		ctx = s.connContext(ctx, c)
		if prevCtx != nil {
			ctx = prevCtx(ctx, c)
		}
		return ctx
	}
	hs.ConnState = func(c net.Conn, st http.ConnState) {
		s.connState(c, st)
		if prevState != nil {
			prevState(c, st)
		}
	}
}

// configForClient gives each handshake its own configuration, whose VerifyConnection knows the
// connection: the verified peer is recorded on it, for PeerOf and for closing on revocation.
// Session tickets keep working: crypto/tls uses the keys of the original configuration.
func (s *Server) configForClient(hello *tls.ClientHelloInfo) (*tls.Config, error) {
	c := s.base.Clone()
	conn := hello.Conn
	c.VerifyConnection = func(cs tls.ConnectionState) error { return s.verifyConnection(conn, cs) }
	return c, nil
}

// verifyConnection runs on every handshake, resumed ones included (VerifyPeerCertificate does
// not run on resumption, so a revoked SVID could come back on a session ticket without this).
func (s *Server) verifyConnection(conn net.Conn, cs tls.ConnectionState) error {
	p, err := s.Verify(cs.PeerCertificates)
	if err == nil {
		var e *connEntry
		if conn != nil {
			e = s.conns.get(conn)
		}
		if e == nil {
			err = &RefusedError{Reason: ReasonUntracked, ID: p.ID, Serial: p.Serial,
				Err: errors.New("the connection is not tracked: serve through Server.Configure")}
		} else {
			e.peer.Store(&p)
			// A revocation applied between Verify and the store above was swept without seeing
			// this connection: look again now that a sweep would see it.
			if rev, ok := s.revs.match(&p); ok {
				e.peer.Store(nil)
				err = &RefusedError{Reason: ReasonRevoked, ID: p.ID, Serial: p.Serial, Err: errors.New(rev.describe())}
			}
		}
	}
	if err != nil {
		s.refused(conn, err)
		return err
	}
	s.handshakes.Add(context.Background(), 1, metric.WithAttributes(attribute.String("result", "accepted")))
	return nil
}

func (s *Server) refused(conn net.Conn, err error) {
	var r *RefusedError
	if !errors.As(err, &r) {
		r = &RefusedError{Reason: ReasonInvalidChain, Err: err}
	}
	ctx := context.Background()
	s.handshakes.Add(ctx, 1, metric.WithAttributes(attribute.String("result", "refused"), attribute.String("reason", string(r.Reason))))
	level := slog.LevelWarn
	if r.Reason == ReasonNoCertificate {
		level = slog.LevelDebug // scanners and misconfigured clients; counted, not worth a warning each
	}
	attrs := []slog.Attr{slog.String("reason", string(r.Reason))}
	if conn != nil {
		attrs = append(attrs, slog.String("remote_addr", conn.RemoteAddr().String()))
	}
	if !r.ID.IsZero() {
		attrs = append(attrs, slog.String("spiffe_id", r.ID.String()))
	}
	if r.Serial != "" {
		attrs = append(attrs, slog.String("serial", r.Serial))
	}
	if r.Err != nil {
		attrs = append(attrs, slog.String("error", r.Err.Error()))
	}
	s.logger.LogAttrs(ctx, level, "mtls client certificate refused", attrs...)
}

// Refresh reads the revocations recorded since the last read and closes the open connections
// they revoke. The first successful Refresh lifts the refusal of every handshake that a
// configured store imposes; the kernel calls it once before serving. Without a store it does
// nothing.
func (s *Server) Refresh(ctx context.Context) error {
	if s.store == nil {
		return nil
	}
	rs, err := s.store.Revocations(ctx, s.revs.since(s.overlap))
	if err != nil {
		s.refreshes.Add(ctx, 1, metric.WithAttributes(attribute.String("result", "failure")))
		return fmt.Errorf("mtls: read revocations: %w", err)
	}
	valid := make([]Revocation, 0, len(rs))
	for _, r := range rs {
		n, err := r.normalize()
		if err != nil {
			s.logger.ErrorContext(ctx, "mtls revocation ignored", "error", err.Error())
			continue
		}
		valid = append(valid, n)
	}
	now := s.now()
	s.revs.prune(now)
	changed := s.revs.add(valid, true, now)
	s.revs.markRefreshed(now)
	s.refreshes.Add(ctx, 1, metric.WithAttributes(attribute.String("result", "success")))
	if changed > 0 {
		s.sweep(ctx)
	}
	return nil
}

// Revoke applies revocations on this replica at once (new handshakes refused, open connections
// closed) without waiting for the store. The caller records them in the store too, for the other
// replicas and for restarts.
func (s *Server) Revoke(ctx context.Context, rs ...Revocation) error {
	valid := make([]Revocation, 0, len(rs))
	for _, r := range rs {
		n, err := r.normalize()
		if err != nil {
			return fmt.Errorf("mtls: revoke: %w", err)
		}
		valid = append(valid, n)
	}
	if s.revs.add(valid, false, s.now()) > 0 {
		s.sweep(ctx)
	}
	return nil
}

// Run refreshes the revocations at once and then every RefreshInterval until ctx ends, logging
// failures (the revocations already read stay in force). It returns nil when ctx ends.
func (s *Server) Run(ctx context.Context) error {
	if s.store == nil {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		if err := s.Refresh(ctx); err != nil && ctx.Err() == nil {
			s.logger.ErrorContext(ctx, "mtls revocation refresh failed; the revocations read before stay in force", "error", err.Error())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// sweep closes the tracked connections whose peer is revoked.
func (s *Server) sweep(ctx context.Context) {
	for _, e := range s.conns.snapshot() {
		p := e.peer.Load()
		if p == nil {
			continue
		}
		rev, ok := s.revs.match(p)
		if !ok {
			continue
		}
		// Closing the TCP connection under TLS ends the HTTP/1.1 or HTTP/2 connection and every
		// request on it: the revoked client must not finish what it started.
		_ = e.conn.Close()
		s.closed.Add(ctx, 1)
		s.logger.WarnContext(ctx, "mtls connection of a revoked identity closed",
			"spiffe_id", p.ID.String(), "serial", p.Serial, "remote_addr", e.conn.RemoteAddr().String(), "revocation", rev.describe())
	}
}

// connEntry is one connection of the listener and, once verified, its peer.
type connEntry struct {
	conn net.Conn             // the TCP connection under TLS
	peer atomic.Pointer[Peer] // stored by the handshake, read by requests and sweeps
}

// tracker maps the listener's open connections to their entries.
//
// Concurrency: mu guards conns and is never held while calling out (sweeps work on a snapshot).
type tracker struct {
	mu    sync.Mutex
	conns map[net.Conn]*connEntry
}

func (t *tracker) add(e *connEntry) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.conns[e.conn] = e
}

func (t *tracker) get(c net.Conn) *connEntry {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.conns[c]
}

func (t *tracker) remove(c net.Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.conns, c)
}

func (t *tracker) snapshot() []*connEntry {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*connEntry, 0, len(t.conns))
	for _, e := range t.conns {
		out = append(out, e)
	}
	return out
}

// Tracked returns the number of connections tracked (for tests and debugging).
func (s *Server) Tracked() int {
	s.conns.mu.Lock()
	defer s.conns.mu.Unlock()
	return len(s.conns.conns)
}

type connKey struct{}

// connContext registers a connection as the http.Server accepts it, before its handshake, and
// carries its entry in the connection's context for PeerOf.
func (s *Server) connContext(ctx context.Context, c net.Conn) context.Context {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return ctx
	}
	e := &connEntry{conn: tc.NetConn()}
	s.conns.add(e)
	return context.WithValue(ctx, connKey{}, e)
}

// connState forgets a connection when it closes. A hijacked connection is forgotten too: its new
// owner is responsible for it, and it could otherwise never leave the map.
func (s *Server) connState(c net.Conn, st http.ConnState) {
	if st != http.StateClosed && st != http.StateHijacked {
		return
	}
	if tc, ok := c.(*tls.Conn); ok {
		s.conns.remove(tc.NetConn())
	}
}

// PeerOf returns the verified client of a request served by an http.Server prepared by
// Configure. It is false for any other request, including one carrying a client certificate
// that this package did not verify.
func PeerOf(r *http.Request) (Peer, bool) {
	e, ok := r.Context().Value(connKey{}).(*connEntry)
	if !ok || r.TLS == nil || !r.TLS.HandshakeComplete || len(r.TLS.PeerCertificates) == 0 {
		return Peer{}, false
	}
	p := e.peer.Load()
	if p == nil || !bytes.Equal(p.Certificates[0].Raw, r.TLS.PeerCertificates[0].Raw) {
		return Peer{}, false
	}
	return *p, true
}

// PeerID returns the SPIFFE ID of the verified client of r; see PeerOf.
func PeerID(r *http.Request) (spiffeid.ID, bool) {
	p, ok := PeerOf(r)
	return p.ID, ok
}
