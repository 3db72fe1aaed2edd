package identity_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/nops-kernel/nops/internal/identity"
)

func TestLoadOrCreateCreatesOnceThenLoads(t *testing.T) {
	f := newFixture(t, nil)
	seq, auths, err := f.st.CAAuthorities(t.Context(), testTD)
	if err != nil {
		t.Fatal(err)
	}
	if seq != 1 || len(auths) != 2 || auths[0].Kind != identity.KindRoot || auths[1].Kind != identity.KindIntermediate ||
		auths[1].ParentID != auths[0].ID {
		t.Fatalf("after the first start: sequence %d, authorities %+v; want 1, a root and an intermediate under it", seq, auths)
	}
	again := f.replica(t)
	if seq2, auths2, _ := f.st.CAAuthorities(t.Context(), testTD); seq2 != 1 || len(auths2) != 2 {
		t.Fatalf("a second start changed the CA: sequence %d, %d authorities", seq2, len(auths2))
	}
	want, _ := f.ca.BundleJWKS()
	if got, _ := again.BundleJWKS(); !bytes.Equal(got, want) {
		t.Fatalf("the reloaded CA publishes another bundle:\n%s\nwant\n%s", got, want)
	}
	// What the reloaded CA signs verifies against the first one's bundle.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	id, _ := identity.AgentID(again.TrustDomain(), "ten_a", "agt_a")
	svid, err := again.Sign(makeCSR(t, key, nil), id, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, f.ca.Bundle(), x509svid.WithTime(f.clock.Now())); err != nil {
		t.Fatalf("an SVID of the reloaded CA does not verify against the first one's bundle: %v", err)
	}
}

// racingStore lets another replica create or change the CA right after this replica read it,
// as a concurrent start would, once.
type racingStore struct {
	identity.Store
	once   sync.Once
	before func()
}

func (r *racingStore) CAAuthorities(ctx context.Context, td string) (int64, []identity.Authority, error) {
	seq, auths, err := r.Store.CAAuthorities(ctx, td)
	r.once.Do(r.before)
	return seq, auths, err
}

func TestLoadOrCreateLoserReloadsTheWinnersCA(t *testing.T) {
	st, _ := openStore(t)
	box := newBox(t, "k1")
	cfg := identity.Config{TrustDomain: testTD}
	var winner *identity.CA
	racing := &racingStore{Store: st, before: func() {
		var err error
		if winner, err = identity.LoadOrCreate(context.Background(), st, box, cfg); err != nil {
			t.Errorf("the winner's LoadOrCreate: %v", err)
		}
	}}
	loser, err := identity.LoadOrCreate(t.Context(), racing, box, cfg)
	if err != nil {
		t.Fatalf("the loser's LoadOrCreate: %v", err)
	}
	if seq, auths, _ := st.CAAuthorities(t.Context(), testTD); seq != 1 || len(auths) != 2 {
		t.Fatalf("after a lost race: sequence %d, %d authorities; want the winner's CA only (1, 2)", seq, len(auths))
	}
	w, _ := winner.BundleJWKS()
	l, _ := loser.BundleJWKS()
	if !bytes.Equal(w, l) {
		t.Fatalf("the loser serves another bundle than the winner")
	}
}

func TestKeysAreSealedAtRest(t *testing.T) {
	f := newFixture(t, nil)
	_, auths, err := f.st.CAAuthorities(t.Context(), testTD)
	if err != nil {
		t.Fatal(err)
	}
	// Everything the database files hold, WAL included.
	var files [][]byte
	matches, _ := filepath.Glob(filepath.Join(f.dir, "nops.db*"))
	for _, m := range matches {
		b, err := os.ReadFile(m)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, b)
	}
	for _, a := range auths {
		pkcs8, err := f.box.Open(a.SealedKey, identity.SealAAD(a.ID))
		if err != nil {
			t.Fatalf("open the key of %s with the right KEK: %v", a.ID, err)
		}
		if _, err := x509.ParsePKCS8PrivateKey(pkcs8); err != nil {
			t.Fatalf("the sealed key of %s is not PKCS #8: %v", a.ID, err)
		}
		if bytes.Contains(a.SealedKey, pkcs8) {
			t.Errorf("the stored key of %s contains its PKCS #8 plaintext", a.ID)
		}
		// The private scalar must appear nowhere in the database files.
		k, err := x509.ParsePKCS8PrivateKey(pkcs8)
		if err != nil {
			t.Fatal(err)
		}
		scalar, err := k.(*ecdsa.PrivateKey).Bytes()
		if err != nil {
			t.Fatal(err)
		}
		for i, b := range files {
			if bytes.Contains(b, scalar) {
				t.Errorf("database file %d holds the key material of %s in clear", i, a.ID)
			}
		}
		// A sealed key moved onto another authority's row does not open there.
		other := auths[0].ID
		if other == a.ID {
			other = auths[1].ID
		}
		if _, err := f.box.Open(a.SealedKey, identity.SealAAD(other)); err == nil {
			t.Errorf("the key of %s opens as the key of %s", a.ID, other)
		}
	}
}

func TestWrongKEKIsAClearError(t *testing.T) {
	f := newFixture(t, nil)
	_, err := identity.LoadOrCreate(t.Context(), f.st, newBox(t, "k1"), f.cfg)
	if err == nil {
		t.Fatal("LoadOrCreate with another key-encryption key succeeded")
	}
	for _, want := range []string{"key-encryption key", "signing.kek_file", "ca_"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestAuthorityCertificates(t *testing.T) {
	f := newFixture(t, nil)
	_, auths, err := f.st.CAAuthorities(t.Context(), testTD)
	if err != nil {
		t.Fatal(err)
	}
	root, err := x509.ParseCertificate(auths[0].CertDER)
	if err != nil {
		t.Fatal(err)
	}
	inter, err := x509.ParseCertificate(auths[1].CertDER)
	if err != nil {
		t.Fatal(err)
	}
	now := f.clock.Now()
	for _, c := range []struct {
		name       string
		cert       *x509.Certificate
		parent     *x509.Certificate
		maxPathLen int
		notAfter   time.Time
	}{
		{"root", root, root, 1, now.Add(identity.DefaultRootTTL)},
		{"intermediate", inter, root, 0, now.Add(identity.DefaultIntermediateTTL)},
	} {
		t.Run(c.name, func(t *testing.T) {
			cert := c.cert
			if err := cert.CheckSignatureFrom(c.parent); err != nil {
				t.Errorf("not signed by its parent: %v", err)
			}
			if !cert.IsCA || !cert.BasicConstraintsValid || cert.MaxPathLen != c.maxPathLen {
				t.Errorf("IsCA %v, basic constraints %v, MaxPathLen %d; want a CA with path length %d", cert.IsCA, cert.BasicConstraintsValid, cert.MaxPathLen, c.maxPathLen)
			}
			if cert.KeyUsage&x509.KeyUsageCertSign == 0 {
				t.Errorf("key usage %b lacks certSign", cert.KeyUsage)
			}
			if k, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
				t.Errorf("public key %T, want ECDSA P-256", cert.PublicKey)
			}
			if len(cert.URIs) != 1 || cert.URIs[0].String() != "spiffe://"+testTD {
				t.Errorf("URI SANs %v, want exactly spiffe://%s", cert.URIs, testTD)
			}
			if !cert.NotAfter.Equal(c.notAfter) || !cert.NotBefore.Equal(now.Add(-identity.Backdate)) {
				t.Errorf("valid %v to %v, want %v to %v", cert.NotBefore, cert.NotAfter, now.Add(-identity.Backdate), c.notAfter)
			}
		})
	}
}

func TestRefreshReplacesTheIntermediateAtHalfLife(t *testing.T) {
	f := newFixture(t, func(c *identity.Config) { c.SVIDTTL, c.IntermediateTTL = time.Hour, 10*time.Hour })
	other := f.replica(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	id, _ := identity.AgentID(f.ca.TrustDomain(), "ten_a", "agt_a")
	bundleBefore := f.ca.BundlePEM()

	f.clock.Advance(4*time.Hour + 59*time.Minute)
	if err := f.ca.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if f.ca.Sequence() != 1 {
		t.Fatalf("refresh before half-life changed the CA: sequence %d", f.ca.Sequence())
	}
	before, err := f.ca.Sign(makeCSR(t, key, nil), id, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(time.Minute)
	if err := f.ca.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if f.ca.Sequence() != 2 {
		t.Fatalf("refresh at half-life: sequence %d, want 2 (a new intermediate)", f.ca.Sequence())
	}
	after, err := f.ca.Sign(makeCSR(t, key, nil), id, 0)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(after.Certificates[1].Raw, before.Certificates[1].Raw) {
		t.Fatal("the SVID after the rotation is signed by the old intermediate")
	}
	if !bytes.Equal(f.ca.BundlePEM(), bundleBefore) {
		t.Error("an intermediate rotation changed the roots of the bundle")
	}
	// Both the SVID of the old intermediate (still valid) and the new one verify.
	for name, s := range map[string]identity.SVID{"old": before, "new": after} {
		if _, _, err := x509svid.Verify(s.Certificates, f.ca.Bundle(), x509svid.WithTime(f.clock.Now())); err != nil {
			t.Errorf("the %s SVID does not verify after the rotation: %v", name, err)
		}
	}
	// Another replica picks the new intermediate up instead of adding its own.
	if err := other.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if seq, auths, _ := f.st.CAAuthorities(t.Context(), testTD); seq != 2 || len(auths) != 3 {
		t.Fatalf("after two replicas refreshed: sequence %d, %d authorities; want 2 and 3", seq, len(auths))
	}
	fromOther, err := other.Sign(makeCSR(t, key, nil), id, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(fromOther.Certificates[1].Raw, after.Certificates[1].Raw) {
		t.Error("the other replica signs with another intermediate than the one that rotated")
	}
}

func TestRefreshCreatesARootWhenEveryRootExpired(t *testing.T) {
	f := newFixture(t, func(c *identity.Config) {
		c.SVIDTTL, c.IntermediateTTL, c.RootTTL = time.Hour, 10*time.Hour, 20*time.Hour
	})
	old := f.ca.Bundle().X509Authorities()
	f.clock.Advance(21 * time.Hour)
	if err := f.ca.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	roots := f.ca.Bundle().X509Authorities()
	if len(roots) != 1 || roots[0].Equal(old[0]) {
		t.Fatalf("after every root expired the bundle holds %d roots (the old one: %v); want one new root", len(roots), len(roots) == 1 && roots[0].Equal(old[0]))
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	id, _ := identity.AgentID(f.ca.TrustDomain(), "ten_a", "agt_a")
	s, err := f.ca.Sign(makeCSR(t, key, nil), id, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.Verify(s.Certificates, f.ca.Bundle(), x509svid.WithTime(f.clock.Now())); err != nil {
		t.Fatalf("an SVID of the new root does not verify: %v", err)
	}
}

func TestLoadOrCreateRefusesBadConfig(t *testing.T) {
	st, _ := openStore(t)
	box := newBox(t, "k1")
	for _, tc := range []struct {
		name string
		cfg  identity.Config
		want string
	}{
		{"empty trust domain", identity.Config{}, "trust domain"},
		{"trust domain with a path", identity.Config{TrustDomain: "spiffe://nops.test/x"}, "trust domain"},
		{"upper case trust domain", identity.Config{TrustDomain: "NOPS.test"}, "trust domain"},
		{"intermediate shorter than two svids", identity.Config{TrustDomain: testTD, SVIDTTL: time.Hour, IntermediateTTL: 90 * time.Minute}, "intermediate ttl"},
		{"root shorter than two intermediates", identity.Config{TrustDomain: testTD, IntermediateTTL: 48 * time.Hour, RootTTL: 72 * time.Hour}, "root ttl"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := identity.LoadOrCreate(t.Context(), st, box, tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("LoadOrCreate = %v, want an error about %s", err, tc.want)
			}
		})
	}
	if seq, _, _ := st.CAAuthorities(t.Context(), testTD); seq != 0 {
		t.Fatalf("a refused configuration created a CA (sequence %d)", seq)
	}
}

func TestRunReturnsWhenTheContextEnds(t *testing.T) {
	f := newFixture(t, func(c *identity.Config) { c.RefreshInterval = time.Millisecond })
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- f.ca.Run(ctx) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v, want nil when its context ends", err)
	}
}
