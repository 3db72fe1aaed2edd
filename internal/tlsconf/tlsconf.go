package tlsconf

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// meterName is the instrumentation scope of the TLS metrics.
const meterName = "github.com/nops-kernel/nops/internal/tlsconf"

// DefaultReloadInterval is how often Run polls the certificate files when Config leaves it zero.
const DefaultReloadInterval = 5 * time.Second

// Config says where the certificate comes from.
type Config struct {
	// CertFile and KeyFile are PEM files: the certificate (chain, leaf first) and its private key.
	// Both or neither.
	CertFile string
	KeyFile  string
	// DevCert, when no files are named, uses a generated self-signed development certificate
	// kept under DataDir/tls. Ignored when files are named.
	DevCert bool
	// DataDir is the kernel's data directory; required with DevCert.
	DataDir string
	// ReloadInterval is how often Run polls the files. Zero: DefaultReloadInterval.
	ReloadInterval time.Duration
}

// Options are the Manager's optional dependencies.
type Options struct {
	// Logger receives loads, rejected reloads and the development certificate's fingerprint.
	// Nil: discarded.
	Logger *slog.Logger
	// MeterProvider supplies the TLS metrics. Nil: no metrics.
	MeterProvider metric.MeterProvider
	// Now is the clock for validity checks and the expiry gauge. Nil: time.Now.
	Now func() time.Time
}

// cipherSuites are the TLS 1.2 suites allowed: ECDHE key exchange (forward secrecy) with an AEAD
// cipher. TLS 1.3's suites are all AEAD and Go does not let them be configured.
var cipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// CipherSuites returns the TLS 1.2 cipher suites the server accepts (a copy).
func CipherSuites() []uint16 { return append([]uint16(nil), cipherSuites...) }

// curvePreferences filter Go's default key exchanges (crypto/tls keeps only those of its default
// list that appear here), so the hybrids are offered exactly where Go enables them by default.
var curvePreferences = []tls.CurveID{tls.X25519MLKEM768, tls.SecP256r1MLKEM768, tls.X25519, tls.CurveP256}

// Manager holds the certificate in use and reloads it. See the package doc.
type Manager struct {
	certFile, keyFile string
	interval          time.Duration
	logger            *slog.Logger
	now               func() time.Time

	cur atomic.Pointer[pair]

	// mu serialises reloads (Reload and the poll of Run) and guards the fields below.
	mu          sync.Mutex
	stamps      [2]stamp // of certFile and keyFile at the last poll
	settling    bool     // the stamps changed at the last poll; read them if they hold still
	lastTried   [32]byte // SHA-256 of the content of the last reload attempt, good or bad
	reloads     metric.Int64Counter
	expiryReg   metric.Registration
	closeOnce   sync.Once
	closeResult error
}

// pair is a checked certificate and key, and the hash of the files they came from.
type pair struct {
	cert *tls.Certificate
	sum  [32]byte
}

// stamp is what a poll compares before reading a file.
type stamp struct {
	modTime time.Time
	size    int64
	exists  bool
}

// New loads the certificate (generating the development one when Config asks for it) and returns
// a Manager serving it. A missing, unparsable, mismatched or expired pair is an error: the kernel
// does not start without a valid certificate.
func New(ctx context.Context, cfg Config, opts Options) (*Manager, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MeterProvider == nil {
		opts.MeterProvider = noop.NewMeterProvider()
	}
	if cfg.ReloadInterval < 0 {
		return nil, fmt.Errorf("tls: reload interval must not be negative, got %s", cfg.ReloadInterval)
	}
	if cfg.ReloadInterval == 0 {
		cfg.ReloadInterval = DefaultReloadInterval
	}
	m := &Manager{interval: cfg.ReloadInterval, logger: opts.Logger, now: opts.Now}
	switch {
	case cfg.CertFile != "" && cfg.KeyFile != "":
		m.certFile, m.keyFile = cfg.CertFile, cfg.KeyFile
	case cfg.CertFile != "" || cfg.KeyFile != "":
		return nil, errors.New("tls: cert_file and key_file must be set together")
	case cfg.DevCert:
		if cfg.DataDir == "" {
			return nil, errors.New("tls: the development certificate needs a data directory")
		}
		var err error
		m.certFile, m.keyFile, err = ensureDevCert(ctx, filepath.Join(cfg.DataDir, "tls"), opts.Now(), opts.Logger)
		if err != nil {
			return nil, err
		}
	default:
		return nil, errors.New("tls: no certificate: set cert_file and key_file, or enable the development certificate")
	}

	certPEM, keyPEM, err := m.read()
	if err != nil {
		return nil, err
	}
	p, err := m.check(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("tls: load %s and %s: %w", m.certFile, m.keyFile, err)
	}
	m.cur.Store(p)
	m.lastTried = p.sum
	m.stamps = m.stat()
	m.warnKeyMode()
	m.logLoaded(ctx, "tls certificate loaded", p)

	if err := m.instrument(opts.MeterProvider); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Manager) instrument(mp metric.MeterProvider) error {
	meter := mp.Meter(meterName)
	var err error
	if m.reloads, err = meter.Int64Counter("nops_tls_reloads_total",
		metric.WithDescription("Reloads of new TLS certificate content, by result (success, failure).")); err != nil {
		return fmt.Errorf("tls: create reloads counter: %w", err)
	}
	expiry, err := meter.Float64ObservableGauge("nops_tls_cert_expiry_seconds", metric.WithUnit("s"),
		metric.WithDescription("Seconds until the TLS certificate in use expires (negative once expired)."))
	if err != nil {
		return fmt.Errorf("tls: create expiry gauge: %w", err)
	}
	m.expiryReg, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveFloat64(expiry, m.cur.Load().cert.Leaf.NotAfter.Sub(m.now()).Seconds())
		return nil
	}, expiry)
	if err != nil {
		return fmt.Errorf("tls: register expiry gauge: %w", err)
	}
	return nil
}

// Close unregisters the expiry gauge. The Manager keeps serving its certificate.
func (m *Manager) Close() error {
	m.closeOnce.Do(func() {
		if m.expiryReg != nil {
			m.closeResult = m.expiryReg.Unregister()
		}
	})
	return m.closeResult
}

// TLSConfig returns a new server configuration serving the Manager's current certificate. The
// caller may modify it (http.Server.ServeTLS adds "h2" itself when missing).
func (m *Manager) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:       tls.VersionTLS12,
		CipherSuites:     CipherSuites(),
		CurvePreferences: append([]tls.CurveID(nil), curvePreferences...),
		NextProtos:       []string{"h2", "http/1.1"},
		GetCertificate:   m.getCertificate,
	}
}

func (m *Manager) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return m.cur.Load().cert, nil
}

// Certificate returns the leaf certificate in use.
func (m *Manager) Certificate() *x509.Certificate { return m.cur.Load().cert.Leaf }

// Files returns the certificate and key files in use (the generated ones for the development
// certificate).
func (m *Manager) Files() (certFile, keyFile string) { return m.certFile, m.keyFile }

// Reload reads the files and, when their content differs from the pair in use, checks and swaps
// in the new pair. It returns nil when the new pair is in use or nothing changed, and the reason
// when the new content was rejected (the old pair keeps being served). The kernel calls it on
// SIGHUP.
func (m *Manager) Reload(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stamps, m.settling = m.stat(), false
	certPEM, keyPEM, err := m.read()
	if err != nil {
		m.reject(ctx, err)
		return err
	}
	sum := contentSum(certPEM, keyPEM)
	if sum == m.cur.Load().sum {
		m.lastTried = sum
		return nil
	}
	return m.apply(ctx, certPEM, keyPEM, sum)
}

// Run polls the files every ReloadInterval until ctx ends, reloading when they changed. It
// returns nil when ctx ends.
func (m *Manager) Run(ctx context.Context) error {
	t := time.NewTicker(m.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			m.poll(ctx)
		}
	}
}

// poll reloads once the files' stamps changed and then held still for one interval, and only
// when their content differs from the content tried last, so a broken pair is reported once, not
// at every tick. Waiting for the stamps to settle lets a rotation write both files before either
// is read, instead of logging the mismatched pair between the two writes as an error.
func (m *Manager) poll(ctx context.Context) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.stat()
	if st != m.stamps {
		m.stamps = st
		m.settling = true
		return
	}
	if !m.settling {
		return
	}
	m.settling = false
	certPEM, keyPEM, err := m.read()
	if err != nil {
		// A file being replaced may be briefly missing; the next change of stamp retries.
		m.reject(ctx, err)
		return
	}
	sum := contentSum(certPEM, keyPEM)
	if sum == m.lastTried {
		return
	}
	_ = m.apply(ctx, certPEM, keyPEM, sum)
}

// apply checks the new content and swaps it in. m.mu is held.
func (m *Manager) apply(ctx context.Context, certPEM, keyPEM []byte, sum [32]byte) error {
	m.lastTried = sum
	p, err := m.check(certPEM, keyPEM)
	if err != nil {
		m.reject(ctx, err)
		return err
	}
	m.cur.Store(p)
	m.reloads.Add(ctx, 1, metric.WithAttributes(attribute.String("result", "success")))
	m.warnKeyMode()
	m.logLoaded(ctx, "tls certificate reloaded", p)
	return nil
}

func (m *Manager) reject(ctx context.Context, err error) {
	m.reloads.Add(ctx, 1, metric.WithAttributes(attribute.String("result", "failure")))
	cur := m.cur.Load().cert.Leaf
	m.logger.ErrorContext(ctx, "tls certificate reload rejected; the current certificate stays in use",
		"error", err.Error(), "cert_file", m.certFile, "key_file", m.keyFile,
		"current_serial", serialHex(cur), "current_not_after", cur.NotAfter.UTC().Format(time.RFC3339))
}

// read returns the content of both files.
func (m *Manager) read() (certPEM, keyPEM []byte, err error) {
	if certPEM, err = os.ReadFile(m.certFile); err != nil {
		return nil, nil, fmt.Errorf("tls: read certificate: %w", err)
	}
	if keyPEM, err = os.ReadFile(m.keyFile); err != nil {
		return nil, nil, fmt.Errorf("tls: read key: %w", err)
	}
	return certPEM, keyPEM, nil
}

// check parses the pair and refuses a key that does not match or a certificate not valid now.
func (m *Manager) check(certPEM, keyPEM []byte) (*pair, error) {
	p, err := parsePair(certPEM, keyPEM, m.now())
	if err != nil {
		return nil, err
	}
	return &pair{cert: p, sum: contentSum(certPEM, keyPEM)}, nil
}

// parsePair returns the checked pair.
func parsePair(certPEM, keyPEM []byte, now time.Time) (*tls.Certificate, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// The message of crypto/tls names what is wrong (no PEM block, key mismatch) without
		// echoing key material.
		return nil, fmt.Errorf("parse certificate and key: %w", err)
	}
	if cert.Leaf == nil { // GODEBUG=x509keypairleaf=0
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
	}
	switch leaf := cert.Leaf; {
	case now.After(leaf.NotAfter):
		return nil, fmt.Errorf("certificate %s expired at %s", serialHex(leaf), leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		return nil, fmt.Errorf("certificate %s is not valid before %s", serialHex(leaf), leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	return &cert, nil
}

// contentSum hashes both files' content, length-prefixed so that no two pairs share a sum.
func contentSum(certPEM, keyPEM []byte) [32]byte {
	h := sha256.New()
	fmt.Fprintf(h, "%d\n", len(certPEM))
	h.Write(certPEM)
	h.Write(keyPEM)
	var out [32]byte
	h.Sum(out[:0])
	return out
}

func (m *Manager) stat() [2]stamp {
	var out [2]stamp
	for i, f := range []string{m.certFile, m.keyFile} {
		if fi, err := os.Stat(f); err == nil {
			out[i] = stamp{modTime: fi.ModTime(), size: fi.Size(), exists: true}
		}
	}
	return out
}

// warnKeyMode logs when the key file is readable by others than its owner.
func (m *Manager) warnKeyMode() {
	if fi, err := os.Stat(m.keyFile); err == nil && fi.Mode().Perm()&0o077 != 0 {
		m.logger.Warn("tls key file is readable by group or others; restrict it to mode 0600",
			"key_file", m.keyFile, "mode", fi.Mode().Perm().String())
	}
}

func (m *Manager) logLoaded(ctx context.Context, msg string, p *pair) {
	leaf := p.cert.Leaf
	m.logger.InfoContext(ctx, msg,
		"cert_file", m.certFile,
		"subject", leaf.Subject.String(),
		"dns_names", leaf.DNSNames,
		"serial", serialHex(leaf),
		"not_after", leaf.NotAfter.UTC().Format(time.RFC3339),
		"fingerprint_sha256", Fingerprint(leaf))
}

// Fingerprint returns the SHA-256 fingerprint of the certificate's DER encoding in the format of
// `openssl x509 -fingerprint -sha256` (upper-case hex pairs separated by colons).
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	var b strings.Builder
	for i, x := range sum {
		if i > 0 {
			b.WriteByte(':')
		}
		fmt.Fprintf(&b, "%02X", x)
	}
	return b.String()
}

func serialHex(c *x509.Certificate) string {
	if c == nil || c.SerialNumber == nil {
		return ""
	}
	return c.SerialNumber.Text(16)
}
