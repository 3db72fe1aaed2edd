package mtls_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// testCA is a throwaway SPIFFE CA: a root, optionally an intermediate below it, issuing SVIDs.
type testCA struct {
	td    spiffeid.TrustDomain
	root  *x509.Certificate
	cert  *x509.Certificate // the issuing certificate: the root, or the intermediate
	key   *ecdsa.PrivateKey // the issuing key
	chain []*x509.Certificate
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func randSerial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		t.Fatal(err)
	}
	return n.Add(n, big.NewInt(1))
}

func create(t testing.TB, tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, signer *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// newCA returns a CA for trust domain td whose root signs SVIDs directly.
func newCA(t testing.TB, td string) *testCA {
	t.Helper()
	trust := spiffeid.RequireTrustDomainFromString(td)
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          randSerial(t),
		Subject:               pkix.Name{Organization: []string{"nops test"}, CommonName: "root " + td},
		URIs:                  []*url.URL{trust.ID().URL()},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	root := create(t, tmpl, tmpl, &key.PublicKey, key)
	return &testCA{td: trust, root: root, cert: root, key: key}
}

// intermediate returns a CA issuing from an intermediate signed by ca's root (validity may be
// changed by mutate).
func (ca *testCA) intermediate(t testing.TB, mutate func(*x509.Certificate)) *testCA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          randSerial(t),
		Subject:               pkix.Name{Organization: []string{"nops test"}, CommonName: "intermediate " + ca.td.Name()},
		URIs:                  []*url.URL{ca.td.ID().URL()},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(12 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	if mutate != nil {
		mutate(tmpl)
	}
	inter := create(t, tmpl, ca.cert, &key.PublicKey, ca.key)
	return &testCA{td: ca.td, root: ca.root, cert: inter, key: key, chain: append([]*x509.Certificate{inter}, ca.chain...)}
}

func (ca *testCA) bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(ca.td, []*x509.Certificate{ca.root})
}

// id returns a SPIFFE ID of ca's trust domain.
func (ca *testCA) id(segments ...string) spiffeid.ID {
	return spiffeid.RequireFromSegments(ca.td, segments...)
}

// svid issues an SVID for id, valid from an hour ago for an hour unless mutate changes the
// template (URIs, validity, CA flags). The SVID is built field by field, not parsed, so that
// malformed ones (two URI SANs) can be presented.
func (ca *testCA) svid(t testing.TB, id spiffeid.ID, mutate func(*x509.Certificate)) *x509svid.SVID {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          randSerial(t),
		URIs:                  []*url.URL{id.URL()},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	if mutate != nil {
		mutate(tmpl)
	}
	leaf := create(t, tmpl, ca.cert, &key.PublicKey, ca.key)
	return &x509svid.SVID{ID: id, Certificates: append([]*x509.Certificate{leaf}, ca.chain...), PrivateKey: key}
}

// tlsCert is svid as a tls.Certificate, for clients that present it directly.
func tlsCert(s *x509svid.SVID) *tls.Certificate {
	c := &tls.Certificate{PrivateKey: s.PrivateKey, Leaf: s.Certificates[0]}
	for _, x := range s.Certificates {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c
}

// svidSource is an x509svid.Source whose SVID can be swapped while handshakes read it.
type svidSource struct{ cur atomic.Pointer[x509svid.SVID] }

func newSVIDSource(s *x509svid.SVID) *svidSource {
	src := &svidSource{}
	src.cur.Store(s)
	return src
}

func (s *svidSource) GetX509SVID() (*x509svid.SVID, error) { return s.cur.Load(), nil }
func (s *svidSource) set(v *x509svid.SVID)                 { s.cur.Store(v) }
