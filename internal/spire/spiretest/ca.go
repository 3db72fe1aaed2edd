// Package spiretest is an in-process fake of the SPIFFE Workload API (what a SPIRE agent serves on
// its socket) for tests: a gRPC server on a unix socket under the test's temporary directory that
// streams X.509-SVIDs and bundles of a test CA, and pushes a new SVID or bundle to every open
// stream when the test sets one. The JWT-SVID and WIT methods answer Unimplemented.
//
// Who may import it: tests only (internal/spire, test/e2e). It imports nothing of the project.
package spiretest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// CA is a test certificate authority of one trust domain: self-signed ECDSA P-256 roots that sign
// X.509-SVIDs directly (as an upstream-less SPIRE server does). AddRoot starts a new root: new
// SVIDs are signed by it, and the bundle holds the old and the new ones. Safe for concurrent use.
type CA struct {
	td spiffeid.TrustDomain

	mu    sync.Mutex // guards roots and key
	roots []*x509.Certificate
	key   *ecdsa.PrivateKey // the newest root's
}

// NewCA creates a CA of trust domain td (for instance "example.org") with one root.
func NewCA(tb testing.TB, td string) *CA {
	tb.Helper()
	ca := &CA{td: spiffeid.RequireTrustDomainFromString(td)}
	ca.AddRoot(tb)
	return ca
}

// TrustDomain returns the CA's trust domain.
func (ca *CA) TrustDomain() spiffeid.TrustDomain { return ca.td }

// ID returns the SPIFFE ID of the given path segments in the CA's trust domain.
func (ca *CA) ID(tb testing.TB, segments ...string) spiffeid.ID {
	tb.Helper()
	id, err := spiffeid.FromSegments(ca.td, segments...)
	if err != nil {
		tb.Fatalf("spiretest: SPIFFE ID %v: %v", segments, err)
	}
	return id
}

// AddRoot creates a new root that signs every SVID from now on, and returns it. The bundle keeps
// the previous roots.
func (ca *CA) AddRoot(tb testing.TB) *x509.Certificate {
	tb.Helper()
	key := newKey(tb)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(tb),
		Subject:               pkix.Name{Organization: []string{"spiretest"}, CommonName: "spiretest root"},
		URIs:                  []*url.URL{ca.td.ID().URL()},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	root := create(tb, tmpl, tmpl, &key.PublicKey, key)
	ca.mu.Lock()
	defer ca.mu.Unlock()
	ca.roots = append(ca.roots, root)
	ca.key = key
	return root
}

// Roots returns the CA's roots, oldest first.
func (ca *CA) Roots() []*x509.Certificate {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	return append([]*x509.Certificate(nil), ca.roots...)
}

// Bundle returns the CA's X.509 bundle: every root.
func (ca *CA) Bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(ca.td, ca.Roots())
}

// IssueSVID issues an X.509-SVID for id, valid for ttl (≤ 0: one hour), signed by the newest
// root. The chain is the leaf alone.
func (ca *CA) IssueSVID(tb testing.TB, id spiffeid.ID, ttl time.Duration) *x509svid.SVID {
	tb.Helper()
	if ttl <= 0 {
		ttl = time.Hour
	}
	ca.mu.Lock()
	root, rootKey := ca.roots[len(ca.roots)-1], ca.key
	ca.mu.Unlock()
	key := newKey(tb)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(tb),
		Subject:               pkix.Name{Organization: []string{"spiretest"}},
		URIs:                  []*url.URL{id.URL()},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(ttl),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	leaf := create(tb, tmpl, root, &key.PublicKey, rootKey)
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{leaf}, PrivateKey: key}
}

func newKey(tb testing.TB) *ecdsa.PrivateKey {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("spiretest: generate a key: %v", err)
	}
	return key
}

func serial(tb testing.TB) *big.Int {
	tb.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		tb.Fatalf("spiretest: serial: %v", err)
	}
	return n.Add(n, big.NewInt(1))
}

func create(tb testing.TB, tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, signer *ecdsa.PrivateKey) *x509.Certificate {
	tb.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		tb.Fatalf("spiretest: create a certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatalf("spiretest: parse a certificate: %v", err)
	}
	return cert
}
