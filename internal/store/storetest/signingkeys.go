package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/token"
)

// testSigningKeyRotation covers token.KeyStore.RotateSigningKey: a rotation supersedes the
// current keys of its algorithm in one transaction, serialised with every other rotation.
func testSigningKeyRotation(t *testing.T, open func(t *testing.T) Store) {
	const overlap = 15 * time.Minute
	key := func(id, alg string, created, activates time.Time) token.SigningKey {
		return token.SigningKey{ID: id, Algorithm: alg, Private: []byte("material of " + id), CreatedAt: created, ActivatesAt: activates}
	}
	byID := func(t *testing.T, s Store) map[string]token.SigningKey {
		t.Helper()
		keys, err := s.SigningKeys(t.Context())
		if err != nil {
			t.Fatalf("SigningKeys: %v", err)
		}
		out := map[string]token.SigningKey{}
		for _, k := range keys {
			checkUTC(t, k.ID+" ActivatesAt", k.ActivatesAt)
			checkUTC(t, k.ID+" RetiresAt", k.RetiresAt)
			out[k.ID] = k
		}
		return out
	}

	t.Run("supersedes the current keys of its algorithm", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		ctx := t.Context()
		for _, k := range []token.SigningKey{key("key_ed1", "EdDSA", base, time.Time{}), key("key_es1", "ES256", base, time.Time{})} {
			if err := s.CreateSigningKey(ctx, k); err != nil {
				t.Fatal(err)
			}
		}
		// A later activation than every current key's is kept as given.
		k2 := key("key_ed2", "EdDSA", base.Add(time.Hour), base.Add(time.Hour+time.Minute))
		got, superseded, err := s.RotateSigningKey(ctx, k2, overlap)
		if err != nil {
			t.Fatalf("RotateSigningKey: %v", err)
		}
		want := k2
		want.CreatedAt, want.ActivatesAt = stored(k2.CreatedAt), stored(k2.ActivatesAt)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("RotateSigningKey returned (-want +got):\n%s", diff)
		}
		if !slices.Equal(superseded, []string{"key_ed1"}) {
			t.Errorf("superseded = %v, want [key_ed1]", superseded)
		}
		keys := byID(t, s)
		if r := keys["key_ed1"].RetiresAt; !r.Equal(stored(k2.ActivatesAt.Add(overlap))) {
			t.Errorf("key_ed1 retires at %s, want the new key's activation + overlap %s", r, stored(k2.ActivatesAt.Add(overlap)))
		}
		if diff := cmp.Diff(want, keys["key_ed2"]); diff != "" {
			t.Errorf("the new key as stored (-want +got):\n%s", diff)
		}
		if r := keys["key_es1"].RetiresAt; !r.IsZero() {
			t.Errorf("a key of another algorithm got retired at %s", r)
		}

		// An activation not after the current key's is moved just past it; the key already
		// superseded keeps its retirement.
		k3 := key("key_ed3", "EdDSA", base.Add(2*time.Hour), base)
		got, superseded, err = s.RotateSigningKey(ctx, k3, overlap)
		if err != nil {
			t.Fatalf("second RotateSigningKey: %v", err)
		}
		wantAct := stored(k2.ActivatesAt).Add(time.Microsecond)
		if !got.ActivatesAt.Equal(wantAct) || !slices.Equal(superseded, []string{"key_ed2"}) {
			t.Errorf("second rotation = activation %s superseding %v, want %s superseding [key_ed2]", got.ActivatesAt, superseded, wantAct)
		}
		keys = byID(t, s)
		if a := keys["key_ed3"].ActivatesAt; !a.Equal(wantAct) {
			t.Errorf("key_ed3 stored activation %s, want %s", a, wantAct)
		}
		if r := keys["key_ed2"].RetiresAt; !r.Equal(wantAct.Add(overlap)) {
			t.Errorf("key_ed2 retires at %s, want %s", r, wantAct.Add(overlap))
		}
		if r := keys["key_ed1"].RetiresAt; !r.Equal(stored(k2.ActivatesAt.Add(overlap))) {
			t.Errorf("key_ed1's retirement moved to %s", r)
		}

		// The first key of an algorithm supersedes nothing; a zero activation means its creation.
		got, superseded, err = s.RotateSigningKey(ctx, key("key_rs1", "RS256", base, time.Time{}), overlap)
		if err != nil || len(superseded) != 0 || !got.ActivatesAt.Equal(stored(base)) {
			t.Errorf("rotation of a new algorithm = %+v, %v, %v", got.ActivatesAt, superseded, err)
		}
	})

	t.Run("duplicate id changes nothing", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		ctx := t.Context()
		if err := s.CreateSigningKey(ctx, key("key_a", "EdDSA", base, time.Time{})); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.RotateSigningKey(ctx, key("key_b", "EdDSA", base, base.Add(time.Minute)), overlap); err != nil {
			t.Fatal(err)
		}
		before := byID(t, s)
		_, _, err := s.RotateSigningKey(ctx, key("key_a", "EdDSA", base, base.Add(time.Hour)), overlap)
		if errs.CodeOf(err) != errs.Conflict {
			t.Fatalf("rotation to an existing id = %v, want conflict", err)
		}
		if diff := cmp.Diff(before, byID(t, s)); diff != "" {
			t.Errorf("the refused rotation changed the keys (-before +after):\n%s", diff)
		}
	})

	t.Run("rolls back with the caller's transaction", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		ctx := t.Context()
		if err := s.CreateSigningKey(ctx, key("key_a", "EdDSA", base, time.Time{})); err != nil {
			t.Fatal(err)
		}
		before := byID(t, s)
		boom := errors.New("audit failed")
		err := s.InTx(ctx, func(ctx context.Context) error {
			if _, _, err := s.RotateSigningKey(ctx, key("key_b", "EdDSA", base, base.Add(time.Minute)), overlap); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("InTx = %v, want the caller's error", err)
		}
		if diff := cmp.Diff(before, byID(t, s)); diff != "" {
			t.Errorf("a rolled back rotation left changes (-before +after):\n%s", diff)
		}
	})

	// Replicas rotating at once: the rotations are serialised, so exactly one key stays current,
	// every other one retires, and activations follow the order the rotations committed in.
	t.Run("concurrent rotations leave one current key", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		ctx := t.Context()
		if err := s.CreateSigningKey(ctx, key("key_0", "EdDSA", base, time.Time{})); err != nil {
			t.Fatal(err)
		}
		const n = 8
		var wg sync.WaitGroup
		errc := make(chan error, n)
		for i := range n {
			wg.Go(func() {
				// All ask for the same activation: the store must order them.
				_, _, err := s.RotateSigningKey(ctx, key(fmt.Sprintf("key_%d", i+1), "EdDSA", base, base.Add(time.Minute)), overlap)
				errc <- err
			})
		}
		wg.Wait()
		close(errc)
		for err := range errc {
			if err != nil {
				t.Fatalf("RotateSigningKey: %v", err)
			}
		}
		keys := byID(t, s)
		var current []token.SigningKey
		activations := map[time.Time]string{}
		for _, k := range keys {
			if k.RetiresAt.IsZero() {
				current = append(current, k)
			}
			if k.ID != "key_0" {
				if other, dup := activations[k.ActivatesAt]; dup {
					t.Errorf("%s and %s activate at the same time %s", k.ID, other, k.ActivatesAt)
				}
				activations[k.ActivatesAt] = k.ID
			}
		}
		if len(current) != 1 {
			t.Fatalf("%d current keys after concurrent rotations, want 1: %+v", len(current), current)
		}
		for _, k := range keys {
			if k.ID != current[0].ID && !k.ActivatesAt.Before(current[0].ActivatesAt) {
				t.Errorf("superseded %s activates at %s, not before the current key's %s", k.ID, k.ActivatesAt, current[0].ActivatesAt)
			}
			// Each superseded key retires overlap after the activation of the key that
			// superseded it, which activates after it.
			if k.ID != current[0].ID && !k.RetiresAt.After(k.ActivatesAt.Add(overlap)) {
				t.Errorf("%s retires at %s, not after its activation + overlap", k.ID, k.RetiresAt)
			}
		}
	})
}
