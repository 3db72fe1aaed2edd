package identity_test

import (
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/nops-kernel/nops/internal/identity"
)

func TestKernelSourceRenewsAtHalfLife(t *testing.T) {
	f := newFixture(t, func(c *identity.Config) { c.SVIDTTL, c.IntermediateTTL = time.Hour, 100*time.Hour })
	src, err := identity.NewKernelSource(f.ca, "node-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := src.GetX509SVID()
	if got, want := first.ID.String(), "spiffe://"+testTD+"/kernel/node-1"; got != want {
		t.Fatalf("kernel SVID ID %s, want %s", got, want)
	}
	if src.TrustDomain() != f.ca.TrustDomain() {
		t.Fatalf("trust domain %s", src.TrustDomain())
	}

	f.clock.Advance(29 * time.Minute)
	if renewed, err := src.RenewIfDue(); err != nil || renewed {
		t.Fatalf("before half-life: renewed %v, %v", renewed, err)
	}
	if cur, _ := src.GetX509SVID(); cur != first {
		t.Fatal("the SVID changed before half-life")
	}

	f.clock.Advance(time.Minute)
	if renewed, err := src.RenewIfDue(); err != nil || !renewed {
		t.Fatalf("at half-life: renewed %v, %v", renewed, err)
	}
	second, _ := src.GetX509SVID()
	if second == first || second.Certificates[0].SerialNumber.Cmp(first.Certificates[0].SerialNumber) == 0 {
		t.Fatal("no new SVID at half-life")
	}
	// Overlap: the previous SVID is still valid now, and both verify against the source's bundle.
	b, err := src.GetX509BundleForTrustDomain(src.TrustDomain())
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]*x509svid.SVID{"previous": first, "renewed": second} {
		if _, _, err := x509svid.Verify(s.Certificates, b, x509svid.WithTime(f.clock.Now())); err != nil {
			t.Errorf("the %s SVID does not verify during the overlap: %v", name, err)
		}
	}
}

func TestKernelSourceRenewsAfterTheCAChanged(t *testing.T) {
	f := newFixture(t, func(c *identity.Config) { c.SVIDTTL, c.IntermediateTTL = time.Hour, 10*time.Hour })
	src, err := identity.NewKernelSource(f.ca, "node-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	// Past the intermediate's half-life the CA adds a new one; the kernel's SVID, renewed at its
	// own half-life meanwhile, follows the new intermediate at the next check.
	for range 10 {
		f.clock.Advance(30 * time.Minute)
		if _, err := src.RenewIfDue(); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.ca.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if f.ca.Sequence() != 2 {
		t.Fatalf("CA sequence %d, want 2", f.ca.Sequence())
	}
	if renewed, err := src.RenewIfDue(); err != nil || !renewed {
		t.Fatalf("after the CA changed: renewed %v, %v", renewed, err)
	}
	cur, _ := src.GetX509SVID()
	if cur.Certificates[0].NotAfter.After(f.ca.IssuerNotAfter()) {
		t.Fatal("the renewed SVID outlives its issuer")
	}
}
