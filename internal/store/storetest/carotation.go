package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/identity"
)

// testCARotation covers what a root rotation stores: the activation and retirement times of
// authorities, RetireCAAuthorities and RemoveCAAuthorities.
func testCARotation(t *testing.T, open func(t *testing.T) IdentityStore) {
	s := open(t)
	const td = "nops.test"
	root := authority("ca_root1", identity.KindRoot, "", base)
	inter := authority("ca_inter1", identity.KindIntermediate, "ca_root1", base)
	if err := caAdd(t, s, td, 0, root, inter); err != nil {
		t.Fatal(err)
	}
	// A rotation: a new root, an intermediate staged under it, the old root retiring — one change.
	root2 := authority("ca_root2", identity.KindRoot, "", base.Add(time.Hour))
	inter2 := authority("ca_inter2", identity.KindIntermediate, "ca_root2", base.Add(time.Hour))
	inter2.ActivatesAt = base.Add(time.Hour + 5*time.Minute)
	retires := base.Add(3 * time.Hour)
	err := s.InTx(t.Context(), func(ctx context.Context) error {
		if err := s.AddCAAuthorities(ctx, td, 1, []identity.Authority{root2, inter2}); err != nil {
			return err
		}
		return s.RetireCAAuthorities(ctx, td, []string{"ca_root1"}, retires)
	})
	if err != nil {
		t.Fatalf("rotation: %v", err)
	}
	// A second retirement does not move the first one.
	err = s.InTx(t.Context(), func(ctx context.Context) error {
		return s.RetireCAAuthorities(ctx, td, []string{"ca_root1", "ca_unknown"}, retires.Add(time.Hour))
	})
	if err != nil {
		t.Fatalf("second RetireCAAuthorities: %v", err)
	}
	seq, got := caRead(t, s, td)
	wantRoot := storedAuthority(root)
	wantRoot.RetiresAt = stored(retires)
	wantInter2 := storedAuthority(inter2)
	wantInter2.ActivatesAt = stored(inter2.ActivatesAt)
	want := []identity.Authority{storedAuthority(inter), wantRoot, wantInter2, storedAuthority(root2)}
	if seq != 2 {
		t.Errorf("sequence after the rotation = %d, want 2", seq)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("authorities after the rotation (-want +got):\n%s", diff)
	}
	for _, a := range got {
		checkUTC(t, a.ID+" ActivatesAt", a.ActivatesAt)
		checkUTC(t, a.ID+" RetiresAt", a.RetiresAt)
	}

	// Removal is a compare-and-set on the sequence.
	err = s.InTx(t.Context(), func(ctx context.Context) error {
		return s.RemoveCAAuthorities(ctx, td, 1, []string{"ca_root1", "ca_inter1"}, base.Add(4*time.Hour))
	})
	if errs.CodeOf(err) != errs.Conflict {
		t.Fatalf("RemoveCAAuthorities with a stale sequence = %v, want conflict", err)
	}
	if seq, got := caRead(t, s, td); seq != 2 || len(got) != 4 {
		t.Fatalf("a refused removal changed the CA: sequence %d, %d authorities", seq, len(got))
	}
	// The root is listed before its intermediate: the store deletes them in the order the
	// reference needs.
	err = s.InTx(t.Context(), func(ctx context.Context) error {
		return s.RemoveCAAuthorities(ctx, td, 2, []string{"ca_root1", "ca_inter1"}, base.Add(4*time.Hour))
	})
	if err != nil {
		t.Fatalf("RemoveCAAuthorities: %v", err)
	}
	seq, got = caRead(t, s, td)
	if diff := cmp.Diff([]identity.Authority{wantInter2, storedAuthority(root2)}, got); seq != 3 || diff != "" {
		t.Errorf("after the removal: sequence %d (want 3), authorities (-want +got):\n%s", seq, diff)
	}
}
