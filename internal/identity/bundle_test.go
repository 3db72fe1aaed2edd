package identity_test

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"

	"github.com/nops-kernel/nops/internal/identity"
)

func TestBundleJWKSIsASPIFFEBundle(t *testing.T) {
	f := newFixture(t, nil)
	body, etag := f.ca.BundleJWKS()
	b, err := spiffebundle.Parse(f.ca.TrustDomain(), body)
	if err != nil {
		t.Fatalf("spiffebundle.Parse: %v\n%s", err, body)
	}
	roots := f.ca.Bundle().X509Authorities()
	if got := b.X509Authorities(); len(got) != 1 || !got[0].Equal(roots[0]) {
		t.Fatalf("bundle authorities %d, want the CA's root", len(got))
	}
	if seq, ok := b.SequenceNumber(); !ok || seq != uint64(f.ca.Sequence()) {
		t.Errorf("spiffe_sequence %d (%v), want %d", seq, ok, f.ca.Sequence())
	}
	if hint, ok := b.RefreshHint(); !ok || hint != identity.BundleRefreshHint {
		t.Errorf("spiffe_refresh_hint %v (%v), want %v", hint, ok, identity.BundleRefreshHint)
	}
	if len(b.JWTAuthorities()) != 0 {
		t.Errorf("bundle has JWT authorities: %v", b.JWTAuthorities())
	}
	var doc struct {
		Keys []struct {
			Use string   `json:"use"`
			X5C []string `json:"x5c"`
			D   string   `json:"d"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	for _, k := range doc.Keys {
		if k.Use != "x509-svid" || len(k.X5C) != 1 || k.D != "" {
			t.Errorf("key use %q with %d certificates (private part %q), want x509-svid with one certificate and no private part", k.Use, len(k.X5C), k.D)
		}
	}
	if etag == "" || etag[0] != '"' {
		t.Errorf("etag %q is not a quoted entity tag", etag)
	}
	// Another replica renders the same bytes and tag.
	body2, etag2 := f.replica(t).BundleJWKS()
	if string(body2) != string(body) || etag2 != etag {
		t.Error("two replicas of one CA publish different bundles")
	}
}

func TestBundleChangesWithTheRoots(t *testing.T) {
	f := newFixture(t, func(c *identity.Config) {
		c.SVIDTTL, c.IntermediateTTL, c.RootTTL = time.Hour, 10*time.Hour, 20*time.Hour
	})
	_, before := f.ca.BundleJWKS()
	f.clock.Advance(21 * time.Hour)
	if err := f.ca.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, after := f.ca.BundleJWKS(); after == before {
		t.Fatal("the bundle's entity tag did not change with its roots")
	}
}

func TestBundlePEM(t *testing.T) {
	f := newFixture(t, nil)
	block, rest := pem.Decode(f.ca.BundlePEM())
	if block == nil || block.Type != "CERTIFICATE" || len(rest) != 0 {
		t.Fatalf("BundlePEM is not one CERTIFICATE block: %q", f.ca.BundlePEM())
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !cert.Equal(f.ca.Bundle().X509Authorities()[0]) {
		t.Fatal("BundlePEM holds another certificate than the bundle's root")
	}
	if _, err := f.ca.GetX509BundleForTrustDomain(f.ca.TrustDomain()); err != nil {
		t.Fatal(err)
	}
	other, _ := identity.ParseTrustDomain("other.test")
	if _, err := f.ca.GetX509BundleForTrustDomain(other); err == nil {
		t.Fatal("the CA serves a bundle for another trust domain")
	}
}
