package storetest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/identity"
	"github.com/nops-kernel/nops/internal/sealbox"
)

// IdentityStore is what RunIdentity needs: the identity CA's store, which includes InTx.
type IdentityStore interface {
	identity.Store
}

// RunIdentity runs the identity.Store suite. open must return a fresh store with every migration
// applied, on a database no other test uses, and close it through t.Cleanup.
func RunIdentity(t *testing.T, open func(t *testing.T) IdentityStore) {
	t.Run("round trip", func(t *testing.T) { t.Parallel(); testCARoundTrip(t, open) })
	t.Run("compare-and-set on the sequence", func(t *testing.T) { t.Parallel(); testCACompareAndSet(t, open) })
	t.Run("trust domains apart", func(t *testing.T) { t.Parallel(); testCADomains(t, open) })
	t.Run("transactions", func(t *testing.T) { t.Parallel(); testCATransactions(t, open) })
	t.Run("concurrent rotations: one wins", func(t *testing.T) { t.Parallel(); testCAConcurrentAdds(t, open) })
	t.Run("concurrent LoadOrCreate agree on one CA", func(t *testing.T) { t.Parallel(); testCAConcurrentLoadOrCreate(t, open) })
	t.Run("root rotation", func(t *testing.T) { t.Parallel(); testCARotation(t, open) })
}

// authority returns a stored-looking authority with made-up bytes; the store does not parse them.
func authority(id string, kind identity.Kind, parent string, created time.Time) identity.Authority {
	return identity.Authority{
		ID: id, Kind: kind, ParentID: parent,
		CertDER: []byte("der of " + id), SealedKey: []byte{0x01, 0x00, 0xff, byte(len(id))},
		NotAfter: created.Add(30 * 24 * time.Hour), CreatedAt: created,
	}
}

func storedAuthority(a identity.Authority) identity.Authority {
	a.NotAfter, a.CreatedAt = stored(a.NotAfter), stored(a.CreatedAt)
	return a
}

func caAdd(t *testing.T, s IdentityStore, td string, prev int64, auths ...identity.Authority) error {
	t.Helper()
	return s.InTx(t.Context(), func(ctx context.Context) error { return s.AddCAAuthorities(ctx, td, prev, auths) })
}

func caRead(t *testing.T, s IdentityStore, td string) (int64, []identity.Authority) {
	t.Helper()
	seq, auths, err := s.CAAuthorities(t.Context(), td)
	if err != nil {
		t.Fatalf("CAAuthorities(%s): %v", td, err)
	}
	return seq, auths
}

func testCARoundTrip(t *testing.T, open func(t *testing.T) IdentityStore) {
	s := open(t)
	if seq, auths := caRead(t, s, "nops.test"); seq != 0 || len(auths) != 0 {
		t.Fatalf("CAAuthorities of a missing CA = %d, %v; want 0 and none", seq, auths)
	}
	root := authority("ca_root1", identity.KindRoot, "", base)
	inter := authority("ca_inter1", identity.KindIntermediate, "ca_root1", base)
	if err := caAdd(t, s, "nops.test", 0, root, inter); err != nil {
		t.Fatalf("create the CA: %v", err)
	}
	// Added later, with an ID that sorts first: the order is the order of addition.
	inter2 := authority("ca_a_inter2", identity.KindIntermediate, "ca_root1", base.Add(time.Hour))
	if err := caAdd(t, s, "nops.test", 1, inter2); err != nil {
		t.Fatalf("add an intermediate: %v", err)
	}
	seq, got := caRead(t, s, "nops.test")
	want := []identity.Authority{storedAuthority(inter), storedAuthority(root), storedAuthority(inter2)}
	// root and inter share a creation time: the ID breaks the tie.
	if seq != 2 {
		t.Errorf("sequence = %d, want 2", seq)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("authorities (-want +got):\n%s", diff)
	}
	for _, a := range got {
		checkUTC(t, a.ID+" NotAfter", a.NotAfter)
		checkUTC(t, a.ID+" CreatedAt", a.CreatedAt)
	}
}

func testCACompareAndSet(t *testing.T, open func(t *testing.T) IdentityStore) {
	s := open(t)
	root := authority("ca_root", identity.KindRoot, "", base)
	if err := caAdd(t, s, "nops.test", 0, root); err != nil {
		t.Fatalf("create the CA: %v", err)
	}
	tests := []struct {
		name string
		prev int64
		add  identity.Authority
	}{
		{"create again", 0, authority("ca_root2", identity.KindRoot, "", base)},
		{"stale sequence", 7, authority("ca_inter", identity.KindIntermediate, "ca_root", base)},
		{"taken id", 1, authority("ca_root", identity.KindRoot, "", base.Add(time.Minute))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := caAdd(t, s, "nops.test", tt.prev, tt.add)
			if got := errs.CodeOf(err); got != errs.Conflict {
				t.Fatalf("AddCAAuthorities: error %v (code %q), want code %q", err, got, errs.Conflict)
			}
		})
	}
	seq, got := caRead(t, s, "nops.test")
	if seq != 1 || len(got) != 1 || got[0].ID != "ca_root" {
		t.Fatalf("after refused changes: sequence %d, authorities %v; want 1 and ca_root only", seq, got)
	}
}

func testCADomains(t *testing.T, open func(t *testing.T) IdentityStore) {
	s := open(t)
	if err := caAdd(t, s, "a.test", 0, authority("ca_a", identity.KindRoot, "", base)); err != nil {
		t.Fatal(err)
	}
	if err := caAdd(t, s, "b.test", 0, authority("ca_b", identity.KindRoot, "", base)); err != nil {
		t.Fatalf("a second trust domain's CA: %v", err)
	}
	for td, id := range map[string]string{"a.test": "ca_a", "b.test": "ca_b"} {
		seq, got := caRead(t, s, td)
		if seq != 1 || len(got) != 1 || got[0].ID != id {
			t.Errorf("CA %s: sequence %d, authorities %v; want 1 and %s only", td, seq, got, id)
		}
	}
}

func testCATransactions(t *testing.T, open func(t *testing.T) IdentityStore) {
	s := open(t)
	boom := errors.New("boom")
	err := s.InTx(t.Context(), func(ctx context.Context) error {
		if err := s.AddCAAuthorities(ctx, "nops.test", 0, []identity.Authority{authority("ca_root", identity.KindRoot, "", base)}); err != nil {
			return err
		}
		// The transaction sees its own write.
		if seq, auths, err := s.CAAuthorities(ctx, "nops.test"); err != nil || seq != 1 || len(auths) != 1 {
			return fmt.Errorf("inside the transaction: %d, %v, %v", seq, auths, err)
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("InTx = %v, want boom", err)
	}
	if seq, auths := caRead(t, s, "nops.test"); seq != 0 || len(auths) != 0 {
		t.Fatalf("after a rolled back creation: %d, %v; want nothing", seq, auths)
	}
}

func testCAConcurrentAdds(t *testing.T, open func(t *testing.T) IdentityStore) {
	s := open(t)
	if err := caAdd(t, s, "nops.test", 0, authority("ca_root", identity.KindRoot, "", base)); err != nil {
		t.Fatal(err)
	}
	const writers = 8
	var wg sync.WaitGroup
	start := make(chan struct{})
	errc := make(chan error, writers)
	for i := range writers {
		wg.Go(func() {
			<-start
			errc <- caAdd(t, s, "nops.test", 1, authority(fmt.Sprintf("ca_inter%d", i), identity.KindIntermediate, "ca_root", base))
		})
	}
	close(start)
	wg.Wait()
	close(errc)
	won := 0
	for err := range errc {
		switch {
		case err == nil:
			won++
		case errs.CodeOf(err) != errs.Conflict:
			t.Fatalf("concurrent AddCAAuthorities: %v", err)
		}
	}
	seq, auths := caRead(t, s, "nops.test")
	if won != 1 || seq != 2 || len(auths) != 2 {
		t.Fatalf("%d of %d concurrent rotations won, sequence %d, %d authorities; want 1, 2, 2", won, writers, seq, len(auths))
	}
}

func testCAConcurrentLoadOrCreate(t *testing.T, open func(t *testing.T) IdentityStore) {
	s := open(t)
	secret := make([]byte, sealbox.KeyLen)
	if _, err := rand.Read(secret); err != nil {
		t.Fatal(err)
	}
	box, err := sealbox.New(sealbox.Key{Version: "k1", Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	const replicas = 4
	cas := make([]*identity.CA, replicas)
	errc := make(chan error, replicas)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range replicas {
		wg.Go(func() {
			<-start
			var err error
			cas[i], err = identity.LoadOrCreate(t.Context(), s, box, identity.Config{TrustDomain: "nops.test"})
			errc <- err
		})
	}
	close(start)
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			t.Fatalf("concurrent LoadOrCreate: %v", err)
		}
	}
	seq, auths := caRead(t, s, "nops.test")
	if seq != 1 || len(auths) != 2 {
		t.Fatalf("after %d concurrent LoadOrCreate: sequence %d, %d authorities; want one CA (1, a root and an intermediate)", replicas, seq, len(auths))
	}
	want, _ := cas[0].BundleJWKS()
	for i, ca := range cas[1:] {
		if got, _ := ca.BundleJWKS(); string(got) != string(want) {
			t.Errorf("replica %d serves another bundle than replica 0:\n%s\n%s", i+1, got, want)
		}
	}
}
