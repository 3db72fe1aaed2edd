package identity_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/nops-kernel/nops/internal/identity"
)

const rotationDelay = 5 * time.Minute

func withRotation(c *identity.Config) {
	c.SVIDTTL, c.IntermediateTTL, c.RefreshInterval, c.RootRotationDelay = time.Hour, 10*time.Hour, time.Minute, rotationDelay
}

// signAgent issues an SVID for an agent of ca.
func signAgent(t *testing.T, ca *identity.CA) identity.SVID {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := identity.AgentID(ca.TrustDomain(), "ten_a", "agt_a")
	s, err := ca.Sign(makeCSR(t, key, nil), id, 0)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	return s
}

// verifies reports whether s verifies against bundle at now.
func verifies(s identity.SVID, bundle *x509bundle.Bundle, now time.Time) error {
	_, _, err := x509svid.Verify(s.Certificates, bundle, x509svid.WithTime(now))
	return err
}

// bundleRoots returns the roots of ca's bundle, in the order they were added.
func bundleRoots(ca *identity.CA) []*x509.Certificate { return ca.Bundle().X509Authorities() }

func rotateCA(t *testing.T, ca *identity.CA) identity.Change {
	t.Helper()
	ch, err := ca.Rotate(t.Context())
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	if err := ca.Refresh(t.Context()); err != nil {
		t.Fatalf("Refresh after Rotate: %v", err)
	}
	return ch
}

// The whole life of a root rotation: the new root is in the bundle at once, issuance switches to
// its intermediate after the delay, SVIDs of both verify during the overlap, and the old root
// leaves the bundle (and the store) once no SVID chaining to it can be valid.
func TestRotateRootOverlap(t *testing.T) {
	f := newFixture(t, withRotation)
	oldRoot := bundleRoots(f.ca)[0]
	oldIssuer := f.ca.IssuerID()
	before := signAgent(t, f.ca)

	ch := rotateCA(t, f.ca)
	if ch.Kind != identity.ChangeRotate || ch.Sequence != 2 || len(ch.Added) != 2 ||
		ch.Added[0].Kind != identity.KindRoot || ch.Added[1].Kind != identity.KindIntermediate || ch.Added[1].ParentID != ch.Added[0].ID {
		t.Fatalf("Rotate = %+v; want a root and an intermediate under it at sequence 2", ch)
	}
	activates := f.clock.Now().Add(rotationDelay)
	if !ch.Added[1].ActivatesAt.Equal(activates) {
		t.Errorf("the new intermediate activates at %s, want now + delay %s", ch.Added[1].ActivatesAt, activates)
	}
	retires := activates.Add(time.Hour + identity.Backdate)
	if len(ch.Retiring) != 1 || !ch.Retiring[0].RetiresAt.Equal(retires) {
		t.Fatalf("Retiring = %+v, want the old root at activation + svid ttl + backdate %s", ch.Retiring, retires)
	}

	// The new root is in the bundle at once; the old intermediate still issues.
	roots := bundleRoots(f.ca)
	if len(roots) != 2 || !roots[0].Equal(oldRoot) {
		t.Fatalf("bundle after Rotate holds %d roots; want the old and the new", len(roots))
	}
	if f.ca.Sequence() != 2 {
		t.Errorf("sequence %d after Rotate, want 2", f.ca.Sequence())
	}
	f.clock.Advance(rotationDelay - time.Second)
	lastOld := signAgent(t, f.ca)
	if f.ca.IssuerID() != oldIssuer || !lastOld.Certificates[1].Equal(before.Certificates[1]) {
		t.Fatal("the new intermediate issues before its activation")
	}

	// At the activation issuance switches, without a refresh; both generations verify.
	f.clock.Advance(time.Second)
	after := signAgent(t, f.ca)
	if f.ca.IssuerID() != ch.Added[1].ID || after.Certificates[1].Equal(before.Certificates[1]) {
		t.Fatalf("issuer at the activation is %s, want %s", f.ca.IssuerID(), ch.Added[1].ID)
	}
	newOnly := x509bundle.FromX509Authorities(f.ca.TrustDomain(), roots[1:])
	if err := verifies(after, newOnly, f.clock.Now()); err != nil {
		t.Errorf("the new SVID does not chain to the new root: %v", err)
	}
	for name, s := range map[string]identity.SVID{"old": before, "last old": lastOld, "new": after} {
		if err := verifies(s, f.ca.Bundle(), f.clock.Now()); err != nil {
			t.Errorf("the %s SVID does not verify during the overlap: %v", name, err)
		}
	}
	if err := f.ca.Refresh(t.Context()); err != nil || f.ca.Sequence() != 2 {
		t.Fatalf("refresh at the activation: %v, sequence %d; want no change", err, f.ca.Sequence())
	}

	// Just before the retirement the last old SVID has expired; the old root still is there.
	f.clock.Advance(retires.Sub(f.clock.Now()) - time.Second)
	if err := f.ca.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := len(bundleRoots(f.ca)); n != 2 {
		t.Fatalf("the old root left the bundle before its retirement (%d roots)", n)
	}
	if err := verifies(lastOld, f.ca.Bundle(), f.clock.Now()); err == nil {
		t.Fatal("the last SVID of the old root is still valid a second before the root retires")
	}

	// Retired: out of the bundle and removed from the store, with the sequence moved.
	f.clock.Advance(time.Second)
	if err := f.ca.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	roots = bundleRoots(f.ca)
	if len(roots) != 1 || roots[0].Equal(oldRoot) {
		t.Fatalf("bundle after the retirement holds %d roots (old among them: %v)", len(roots), slices.ContainsFunc(roots, oldRoot.Equal))
	}
	seq, auths, err := f.st.CAAuthorities(t.Context(), testTD)
	if err != nil || seq != 3 || len(auths) != 2 || auths[0].ID != ch.Added[0].ID || auths[1].ID != ch.Added[1].ID {
		t.Fatalf("store after the retirement: sequence %d, %+v, %v; want 3 and the new root and intermediate only", seq, auths, err)
	}
	if body, _ := f.ca.BundleJWKS(); !strings.Contains(string(body), `"spiffe_sequence":3`) {
		t.Errorf("bundle sequence not moved by the retirement: %s", body)
	}
	if err := verifies(signAgent(t, f.ca), f.ca.Bundle(), f.clock.Now()); err != nil {
		t.Errorf("an SVID after the retirement does not verify: %v", err)
	}
}

// Replicas on one database agree: the rotation one makes is the bundle of the other after its
// refresh, both switch issuance at the activation by their clock, and only one removes the
// retired root.
func TestRotateReplicasAgree(t *testing.T) {
	f := newFixture(t, withRotation)
	other := f.replica(t)
	ch := rotateCA(t, f.ca)
	if err := other.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	a, _ := f.ca.BundleJWKS()
	b, _ := other.BundleJWKS()
	if string(a) != string(b) {
		t.Fatalf("replicas serve different bundles after the rotation:\n%s\n%s", a, b)
	}
	f.clock.Advance(rotationDelay)
	for name, ca := range map[string]*identity.CA{"rotating": f.ca, "other": other} {
		if got := ca.IssuerID(); got != ch.Added[1].ID {
			t.Errorf("the %s replica issues with %s at the activation, want %s", name, got, ch.Added[1].ID)
		}
	}
	fromOther := signAgent(t, other)
	if err := verifies(fromOther, f.ca.Bundle(), f.clock.Now()); err != nil {
		t.Errorf("the other replica's SVID does not verify against the rotating one's bundle: %v", err)
	}
	f.clock.Advance(ch.Retiring[0].RetiresAt.Sub(f.clock.Now()))
	var wg sync.WaitGroup
	for _, ca := range []*identity.CA{f.ca, other} {
		wg.Go(func() {
			if err := ca.Refresh(context.Background()); err != nil {
				t.Errorf("Refresh at the retirement: %v", err)
			}
		})
	}
	wg.Wait()
	if seq, auths, _ := f.st.CAAuthorities(t.Context(), testTD); seq != 3 || len(auths) != 2 {
		t.Fatalf("after both replicas refreshed: sequence %d, %d authorities; want 3 and 2", seq, len(auths))
	}
	if err := other.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	a, _ = f.ca.BundleJWKS()
	b, _ = other.BundleJWKS()
	if string(a) != string(b) || len(bundleRoots(other)) != 1 {
		t.Fatalf("replicas disagree after the retirement:\n%s\n%s", a, b)
	}
}

// A second rotation during the first one's delay activates after it; the first new root retires
// after the second activation, the original root keeps the retirement the first gave it.
func TestRotateTwiceDuringTheOverlap(t *testing.T) {
	f := newFixture(t, withRotation)
	first := rotateCA(t, f.ca)
	// Another replica configured with a shorter delay would ask for an earlier activation.
	f.clock.Advance(time.Minute)
	second := rotateCA(t, f.ca)
	a1, a2 := first.Added[1].ActivatesAt, second.Added[1].ActivatesAt
	if !a2.After(a1) {
		t.Fatalf("the second rotation activates at %s, not after the first's %s", a2, a1)
	}
	if len(second.Retiring) != 1 || second.Retiring[0].ID != first.Added[0].ID {
		t.Fatalf("the second rotation retires %+v, want only the first rotation's root", second.Retiring)
	}
	if n := len(bundleRoots(f.ca)); n != 3 {
		t.Fatalf("bundle holds %d roots during two rotations, want 3", n)
	}
	f.clock.Advance(a1.Sub(f.clock.Now()))
	if got := f.ca.IssuerID(); got != first.Added[1].ID {
		t.Errorf("issuer at the first activation %s, want %s", got, first.Added[1].ID)
	}
	f.clock.Advance(a2.Sub(f.clock.Now()))
	if got := f.ca.IssuerID(); got != second.Added[1].ID {
		t.Errorf("issuer at the second activation %s, want %s", got, second.Added[1].ID)
	}
	f.clock.Advance(first.Retiring[0].RetiresAt.Sub(f.clock.Now()))
	if err := f.ca.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := len(bundleRoots(f.ca)); n != 2 {
		t.Fatalf("after the original root retired the bundle holds %d roots, want 2", n)
	}
	f.clock.Advance(second.Retiring[0].RetiresAt.Sub(f.clock.Now()))
	if err := f.ca.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if roots := bundleRoots(f.ca); len(roots) != 1 {
		t.Fatalf("after both retirements the bundle holds %d roots, want the second rotation's only", len(roots))
	}
}

// While a rotated root's intermediate waits for its activation, the current intermediate past its
// half-life is not renewed: the staged one takes over.
func TestRenewalWaitsForTheStagedIntermediate(t *testing.T) {
	f := newFixture(t, func(c *identity.Config) {
		c.SVIDTTL, c.IntermediateTTL, c.RefreshInterval, c.RootRotationDelay = time.Hour, 2*time.Hour, time.Minute, 30*time.Minute
	})
	f.clock.Advance(50 * time.Minute)
	ch := rotateCA(t, f.ca)
	f.clock.Advance(15 * time.Minute) // past the half-life of the first intermediate
	if err := f.ca.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if f.ca.Sequence() != 2 {
		t.Fatalf("an intermediate was renewed while a staged one waits: sequence %d", f.ca.Sequence())
	}
	f.clock.Advance(ch.Added[1].ActivatesAt.Sub(f.clock.Now()))
	if err := f.ca.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if f.ca.Sequence() != 2 || f.ca.IssuerID() != ch.Added[1].ID {
		t.Fatalf("at the activation: sequence %d, issuer %s; want 2 and %s", f.ca.Sequence(), f.ca.IssuerID(), ch.Added[1].ID)
	}
	// The new intermediate is renewed at its own half-life, under the new root.
	f.clock.Advance(time.Hour)
	if err := f.ca.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	_, auths, _ := f.st.CAAuthorities(t.Context(), testTD)
	last := auths[len(auths)-1]
	if last.Kind != identity.KindIntermediate || last.ParentID != ch.Added[0].ID || f.ca.IssuerID() != last.ID {
		t.Fatalf("renewal after the rotation: %+v (issuer %s); want an intermediate under %s", last, f.ca.IssuerID(), ch.Added[0].ID)
	}
}

// OnChange is told each change Refresh makes on its own, inside its transaction: an error rolls
// the change back.
func TestOnChange(t *testing.T) {
	var (
		mu   sync.Mutex
		seen []identity.Change
		fail error
	)
	f := newFixture(t, func(c *identity.Config) {
		withRotation(c)
		c.OnChange = func(_ context.Context, ch identity.Change) error {
			mu.Lock()
			defer mu.Unlock()
			if fail != nil {
				return fail
			}
			seen = append(seen, ch)
			return nil
		}
	})
	kinds := func() []identity.ChangeKind {
		mu.Lock()
		defer mu.Unlock()
		var out []identity.ChangeKind
		for _, c := range seen {
			out = append(out, c.Kind)
		}
		return out
	}
	if got := kinds(); !slices.Equal(got, []identity.ChangeKind{identity.ChangeCreate}) {
		t.Fatalf("changes after the creation = %v", got)
	}
	// A refused renewal leaves nothing; the next refresh makes it.
	f.clock.Advance(5 * time.Hour)
	mu.Lock()
	fail = errors.New("audit down")
	mu.Unlock()
	if err := f.ca.Refresh(t.Context()); err == nil {
		t.Fatal("Refresh succeeded though OnChange failed")
	}
	if seq, _, _ := f.st.CAAuthorities(t.Context(), testTD); seq != 1 {
		t.Fatalf("a renewal whose OnChange failed was stored: sequence %d", seq)
	}
	mu.Lock()
	fail = nil
	mu.Unlock()
	if err := f.ca.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	ch := rotateCA(t, f.ca) // not told: the caller records rotations
	f.clock.Advance(ch.Retiring[0].RetiresAt.Sub(f.clock.Now()))
	if err := f.ca.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := kinds(); !slices.Equal(got, []identity.ChangeKind{identity.ChangeCreate, identity.ChangeRenew, identity.ChangeRetire}) {
		t.Fatalf("changes = %v, want create, renew, retire", got)
	}
	mu.Lock()
	retire := seen[2]
	mu.Unlock()
	if retire.Sequence != 4 || len(retire.Removed) != 3 || retire.Removed[0] != ch.Retiring[0].ID {
		t.Errorf("retire change = %+v; want the old root and its two intermediates at sequence 4", retire)
	}
	if got := identity.ChangeRotate.AuditAction(); got != "identity.ca.rotate" {
		t.Errorf("audit action of a rotation = %q", got)
	}
}

func TestRotationConfigRefused(t *testing.T) {
	st, _ := openStore(t)
	box := newBox(t, "k1")
	for _, tc := range []struct {
		name string
		cfg  identity.Config
		want string
	}{
		{"delay below the refresh interval", identity.Config{TrustDomain: testTD, RefreshInterval: time.Minute, RootRotationDelay: 30 * time.Second}, "refresh interval"},
		{"delay not below half the intermediate", identity.Config{TrustDomain: testTD, SVIDTTL: time.Hour, IntermediateTTL: 2 * time.Hour, RootRotationDelay: time.Hour}, "half the intermediate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := identity.LoadOrCreate(t.Context(), st, box, tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("LoadOrCreate = %v, want an error about %s", err, tc.want)
			}
		})
	}
}
