package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/nops-kernel/nops/internal/apikey"
	"github.com/nops-kernel/nops/internal/identity"
	"github.com/nops-kernel/nops/internal/reqsig"
	"github.com/nops-kernel/nops/internal/sealbox"
	"github.com/nops-kernel/nops/internal/token"
)

// SecretsStore is what the secret-rotation suite needs of an adapter: the stores of the keys and
// authorities that hold digests and sealed values, and the rotation queries over them.
type SecretsStore interface {
	DomainStore
	reqsig.Store
	identity.Store
	apikey.RedigestStore
	apikey.PepperUseStore
	sealbox.Store
	token.KeyStore
}

// RunSecrets runs the suite of the queries behind pepper and key-encryption-key rotation: counts
// per version, re-digests and re-seals. open must return a fresh store with every migration
// applied, on a database no other test uses, and close it through t.Cleanup.
func RunSecrets(t *testing.T, open func(t *testing.T) SecretsStore) {
	t.Run("api key pepper use", func(t *testing.T) { t.Parallel(); testPepperUse(t, open) })
	t.Run("re-digest compare-and-set", func(t *testing.T) { t.Parallel(); testRedigest(t, open) })
	t.Run("sealed values paging", func(t *testing.T) { t.Parallel(); testSealedValues(t, open) })
	t.Run("re-seal compare-and-set", func(t *testing.T) { t.Parallel(); testReplaceSealed(t, open) })
	t.Run("rewrap", func(t *testing.T) { t.Parallel(); testRewrap(t, open) })
}

func secretsStore(t *testing.T, open func(t *testing.T) SecretsStore) SecretsStore {
	s := open(t)
	domCreateTenants(t, s, domTenant("ten_a", "a", base))
	return s
}

// pepperKey is a key of ten_a whose current digest is under version.
func pepperKey(id, version string) apikey.Key {
	k := domKey(id, "ten_a", "")
	k.PepperVersion = version
	return k
}

func testPepperUse(t *testing.T, open func(t *testing.T) SecretsStore) {
	s := secretsStore(t, open)
	now := base.Add(time.Hour)
	withPrev := func(k apikey.Key, version string, until time.Time) apikey.Key {
		k.PrevHash, k.PrevPepperVersion, k.PrevValidUntil = []byte("prev-"+k.ID), version, until
		return k
	}
	revoked := func(k apikey.Key, at time.Time) apikey.Key { k.RevokedAt = at; return k }
	expiring := func(k apikey.Key, at time.Time) apikey.Key { k.ExpiresAt = at; return k }
	domCreateKeys(t, s,
		pepperKey("ak_1", "v1"), // live under v1
		withPrev(pepperKey("ak_2", "v2"), "v1", now.Add(time.Minute)),              // previous secret in grace under v1
		withPrev(pepperKey("ak_3", "v2"), "v1", now),                               // grace ends now: inactive
		revoked(pepperKey("ak_4", "v1"), now),                                      // revoked now: inactive
		revoked(pepperKey("ak_5", "v1"), now.Add(time.Second)),                     // revoked later: live
		expiring(pepperKey("ak_6", "v0"), now),                                     // expires now: inactive
		expiring(pepperKey("ak_7", "v1"), now.Add(time.Second)),                    // expires later: live
		withPrev(revoked(pepperKey("ak_8", "v2"), base), "v1", now.Add(time.Hour)), // revoked key: its previous secret is inactive too
	)
	uses, err := s.APIKeyPepperUse(t.Context(), now)
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(uses, func(a, b apikey.PepperUse) int { return strings.Compare(a.Version, b.Version) })
	want := []apikey.PepperUse{
		{Version: "v0", Inactive: 1},
		{Version: "v1", Keys: 3, PreviousSecrets: 1, Inactive: 3},
		{Version: "v2", Keys: 2, Inactive: 1},
	}
	if diff := cmp.Diff(want, uses); diff != "" {
		t.Fatalf("APIKeyPepperUse (-want +got):\n%s", diff)
	}
	ids, err := s.APIKeysUsingPepper(t.Context(), "v1", now, 10)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"ak_1", "ak_2", "ak_5", "ak_7"}, ids); diff != "" {
		t.Fatalf("APIKeysUsingPepper(v1) (-want +got):\n%s", diff)
	}
	if ids, err := s.APIKeysUsingPepper(t.Context(), "v1", now, 2); err != nil || !slices.Equal(ids, []string{"ak_1", "ak_2"}) {
		t.Fatalf("APIKeysUsingPepper(v1, limit 2) = %v, %v", ids, err)
	}
	if ids, err := s.APIKeysUsingPepper(t.Context(), "v0", now, 10); err != nil || len(ids) != 0 {
		t.Fatalf("APIKeysUsingPepper(v0) = %v, %v; want none (only an expired key)", ids, err)
	}
	// The same check through the domain function the CLI and the retire step use.
	if err := apikey.CheckRetirePepper(t.Context(), s, "v0", now); err != nil {
		t.Fatalf("CheckRetirePepper(v0): %v", err)
	}
	if err := apikey.CheckRetirePepper(t.Context(), s, "v1", now); !errors.Is(err, apikey.ErrPepperInUse) {
		t.Fatalf("CheckRetirePepper(v1): %v", err)
	}
}

func testRedigest(t *testing.T, open func(t *testing.T) SecretsStore) {
	s := secretsStore(t, open)
	ctx := t.Context()
	prev := pepperKey("ak_2", "v1")
	prev.PrevHash, prev.PrevPepperVersion, prev.PrevValidUntil = []byte("prev-ak_2"), "v1", base.Add(time.Hour)
	domCreateKeys(t, s, pepperKey("ak_1", "v1"), prev, pepperKey("ak_3", "v1"), pepperKey("ak_4", "v1"))
	rs := []apikey.Redigest{
		{ID: "ak_1", Expect: []byte("hash-ak_1"), Hash: []byte("new-ak_1"), PepperVersion: "v2"},
		{ID: "ak_2", Previous: true, Expect: []byte("prev-ak_2"), Hash: []byte("new-prev-ak_2"), PepperVersion: "v2"},
		{ID: "ak_3", Expect: []byte("stale"), Hash: []byte("new-ak_3"), PepperVersion: "v2"},          // rotated meanwhile
		{ID: "ak_4", Previous: true, Expect: nil, Hash: []byte("new-prev-ak_4"), PepperVersion: "v2"}, // has no previous secret
		{ID: "ak_9", Expect: []byte("hash-ak_9"), Hash: []byte("x"), PepperVersion: "v2"},             // gone
	}
	// Inside a transaction that rolls back, nothing is written.
	rollback := errors.New("roll back")
	err := s.InTx(ctx, func(ctx context.Context) error {
		if n, err := s.RedigestAPIKeys(ctx, rs); err != nil || n != 2 {
			t.Errorf("RedigestAPIKeys in a transaction = %d, %v", n, err)
		}
		return rollback
	})
	if !errors.Is(err, rollback) {
		t.Fatal(err)
	}
	if k := domGetKey(t, ctx, s, "ak_1"); k.PepperVersion != "v1" {
		t.Fatal("a rolled back re-digest was kept")
	}
	n, err := s.RedigestAPIKeys(ctx, rs)
	if err != nil || n != 2 {
		t.Fatalf("RedigestAPIKeys = %d, %v; want 2", n, err)
	}
	k1 := domGetKey(t, ctx, s, "ak_1")
	k2 := domGetKey(t, ctx, s, "ak_2")
	k3 := domGetKey(t, ctx, s, "ak_3")
	k4 := domGetKey(t, ctx, s, "ak_4")
	switch {
	case string(k1.Hash) != "new-ak_1" || k1.PepperVersion != "v2" || k1.PrevHash != nil:
		t.Errorf("ak_1 after its re-digest: %q under %s", k1.Hash, k1.PepperVersion)
	case string(k2.PrevHash) != "new-prev-ak_2" || k2.PrevPepperVersion != "v2" || string(k2.Hash) != "hash-ak_2" || k2.PepperVersion != "v1":
		t.Errorf("ak_2 after the re-digest of its previous secret: current %q/%s previous %q/%s", k2.Hash, k2.PepperVersion, k2.PrevHash, k2.PrevPepperVersion)
	case string(k3.Hash) != "hash-ak_3" || k3.PepperVersion != "v1":
		t.Errorf("ak_3 was re-digested over a digest that changed")
	case k4.PrevHash != nil || k4.PrevPepperVersion != "":
		t.Errorf("ak_4 got a previous secret")
	}
	// Again: every condition is false now.
	if n, err := s.RedigestAPIKeys(ctx, rs[:2]); err != nil || n != 0 {
		t.Fatalf("RedigestAPIKeys again = %d, %v; want 0", n, err)
	}
}

// sealedFixture fills s with request keys (hmac-sha256 with and without a previous secret,
// ed25519 without any sealed value), CA authorities and token signing keys (plus one still in
// clear, which is no sealed value), their values sealed under k1 for the associated data
// internal/control uses, and returns the refs with their plaintexts.
func sealedFixture(t *testing.T, s SecretsStore, box *sealbox.Box) map[sealbox.Ref]string {
	t.Helper()
	plain := map[sealbox.Ref]string{}
	seal := func(r sealbox.Ref) []byte {
		aad, err := fixtureAAD(r)
		if err != nil {
			t.Fatal(err)
		}
		text := "plain " + r.String()
		v, err := box.Seal([]byte(text), aad)
		if err != nil {
			t.Fatal(err)
		}
		plain[r] = text
		return v
	}
	for i := range 7 {
		id := fmt.Sprintf("rk_%02d", i)
		k := reqHMACKey(id, "ten_a", "")
		k.SealedSecret = seal(sealbox.Ref{Kind: sealbox.KindRequestKey, ID: id, Slot: sealbox.SlotCurrent})
		if i%3 == 1 {
			k.PrevSealedSecret = seal(sealbox.Ref{Kind: sealbox.KindRequestKey, ID: id, Slot: sealbox.SlotPrevious})
			k.PrevValidUntil = base.Add(time.Hour)
		}
		if err := s.CreateRequestKey(t.Context(), k); err != nil {
			t.Fatal(err)
		}
	}
	ed := reqHMACKey("rk_ed", "ten_a", "")
	ed.Alg, ed.SealedSecret, ed.PublicKey = reqsig.AlgEd25519, nil, reqPublicKey(7)
	if err := s.CreateRequestKey(t.Context(), ed); err != nil {
		t.Fatal(err)
	}
	root := authority("ca_01", identity.KindRoot, "", base)
	root.SealedKey = seal(sealbox.Ref{Kind: sealbox.KindCAKey, ID: "ca_01", Slot: sealbox.SlotCurrent})
	inter := authority("ca_02", identity.KindIntermediate, "ca_01", base)
	inter.SealedKey = seal(sealbox.Ref{Kind: sealbox.KindCAKey, ID: "ca_02", Slot: sealbox.SlotCurrent})
	if err := s.InTx(t.Context(), func(ctx context.Context) error {
		return s.AddCAAuthorities(ctx, "nops.test", 0, []identity.Authority{root, inter})
	}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		id := fmt.Sprintf("key_%02d", i)
		k := token.SigningKey{ID: id, Algorithm: token.AlgEdDSA, CreatedAt: base.Add(time.Duration(i) * time.Second),
			Sealed: seal(sealbox.Ref{Kind: sealbox.KindSigningKey, ID: id, Slot: sealbox.SlotCurrent})}
		if err := s.CreateSigningKey(t.Context(), k); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CreateSigningKey(t.Context(), token.SigningKey{ID: "key_clear", Algorithm: token.AlgHS256, Private: []byte("clear secret"), CreatedAt: base}); err != nil {
		t.Fatal(err)
	}
	return plain
}

// fixtureAAD is the associated data of each kind, as internal/control gives it.
func fixtureAAD(r sealbox.Ref) ([]byte, error) {
	switch r.Kind {
	case sealbox.KindRequestKey:
		return []byte(r.ID), nil
	case sealbox.KindCAKey:
		return identity.SealAAD(r.ID), nil
	case sealbox.KindSigningKey:
		return token.SealAAD(r.ID), nil
	}
	return nil, fmt.Errorf("unknown kind %q", r.Kind)
}

func testBox(t *testing.T, current string, older ...string) *sealbox.Box {
	t.Helper()
	key := func(v string) sealbox.Key {
		return sealbox.Key{Version: v, Secret: bytes.Repeat([]byte(v[len(v)-1:]), sealbox.KeyLen)}
	}
	var olderKeys []sealbox.Key
	for _, v := range older {
		olderKeys = append(olderKeys, key(v))
	}
	b, err := sealbox.New(key(current), olderKeys...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func testSealedValues(t *testing.T, open func(t *testing.T) SecretsStore) {
	s := secretsStore(t, open)
	plain := sealedFixture(t, s, testBox(t, "k1"))
	var want []sealbox.Ref
	for r := range plain {
		want = append(want, r)
	}
	slices.SortFunc(want, sealbox.Ref.Compare)
	for _, limit := range []int{1, 2, 3, 100} {
		t.Run(fmt.Sprintf("pages of %d", limit), func(t *testing.T) {
			var got []sealbox.Ref
			after := sealbox.Ref{}
			for pages := 0; ; pages++ {
				if pages > len(want)+1 {
					t.Fatal("paging does not end")
				}
				page, err := s.SealedValues(t.Context(), after, limit)
				if err != nil {
					t.Fatal(err)
				}
				if len(page) > limit {
					t.Fatalf("page of %d values, limit %d", len(page), limit)
				}
				if len(page) == 0 {
					break
				}
				for _, v := range page {
					got = append(got, v.Ref)
					if len(v.Value) == 0 {
						t.Errorf("%s listed without a value", v.Ref)
					}
				}
				after = page[len(page)-1].Ref
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("listed refs (-want +got):\n%s", diff)
			}
		})
	}
	uses, err := s.SealedUse(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	wantUses := []sealbox.Use{{Kind: sealbox.KindCAKey, Version: "k1", Count: 2}, {Kind: sealbox.KindRequestKey, Version: "k1", Count: 9},
		{Kind: sealbox.KindSigningKey, Version: "k1", Count: 3}}
	if diff := cmp.Diff(wantUses, uses, cmpopts.SortSlices(func(a, b sealbox.Use) bool { return a.Kind < b.Kind })); diff != "" {
		t.Fatalf("SealedUse (-want +got):\n%s", diff)
	}
}

func testReplaceSealed(t *testing.T, open func(t *testing.T) SecretsStore) {
	s := secretsStore(t, open)
	sealedFixture(t, s, testBox(t, "k1"))
	ctx := t.Context()
	page, err := s.SealedValues(ctx, sealbox.Ref{}, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range page {
		ok, err := s.ReplaceSealed(ctx, v, append([]byte("new "), v.Value...))
		if err != nil || !ok {
			t.Fatalf("ReplaceSealed(%s) = %v, %v", v.Ref, ok, err)
		}
		// The value read is stale now: a second replacement is refused.
		if ok, err := s.ReplaceSealed(ctx, v, []byte("other")); err != nil || ok {
			t.Fatalf("ReplaceSealed(%s) over a changed value = %v, %v", v.Ref, ok, err)
		}
	}
	after, err := s.SealedValues(ctx, sealbox.Ref{}, 100)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range after {
		if !bytes.Equal(v.Value, append([]byte("new "), page[i].Value...)) {
			t.Fatalf("%s holds %q after the replacement", v.Ref, v.Value)
		}
	}
	// The domain stores read the new values.
	k, err := s.RequestKey(ctx, "rk_01")
	if err != nil || !bytes.HasPrefix(k.SealedSecret, []byte("new ")) || !bytes.HasPrefix(k.PrevSealedSecret, []byte("new ")) {
		t.Fatalf("request key after the replacement: %v", err)
	}
	_, auths, err := s.CAAuthorities(ctx, "nops.test")
	if err != nil || len(auths) != 2 || !bytes.HasPrefix(auths[0].SealedKey, []byte("new ")) {
		t.Fatalf("authorities after the replacement: %v", err)
	}
	keys, err := s.SigningKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k.ID == "key_clear" {
			if len(k.Sealed) != 0 || string(k.Private) != "clear secret" {
				t.Fatalf("the clear signing key changed: %+v", k)
			}
			continue
		}
		if !bytes.HasPrefix(k.Sealed, []byte("new ")) || len(k.Private) != 0 {
			t.Fatalf("signing key %s after the replacement: sealed %q, private %q", k.ID, k.Sealed, k.Private)
		}
	}
	for _, kind := range []string{sealbox.KindCAKey, sealbox.KindSigningKey} {
		if _, err := s.ReplaceSealed(ctx, sealbox.Sealed{Ref: sealbox.Ref{Kind: kind, ID: "ca_01", Slot: sealbox.SlotPrevious}}, nil); err == nil {
			t.Fatalf("ReplaceSealed accepted a slot %s values do not have", kind)
		}
	}
	// The clear signing key is no sealed value: a replacement naming it writes nothing.
	clearRef := sealbox.Sealed{Ref: sealbox.Ref{Kind: sealbox.KindSigningKey, ID: "key_clear", Slot: sealbox.SlotCurrent}, Value: []byte("clear secret")}
	if ok, err := s.ReplaceSealed(ctx, clearRef, []byte("y")); err != nil || ok {
		t.Fatalf("ReplaceSealed of a clear signing key = %v, %v", ok, err)
	}
	gone := sealbox.Sealed{Ref: sealbox.Ref{Kind: sealbox.KindRequestKey, ID: "rk_none", Slot: sealbox.SlotCurrent}, Value: []byte("x")}
	if ok, err := s.ReplaceSealed(ctx, gone, []byte("y")); err != nil || ok {
		t.Fatalf("ReplaceSealed of a missing row = %v, %v", ok, err)
	}
}

// A rewrap through the store re-seals every value under the current KEK, in transactions, keeps
// every plaintext, and leaves nothing under the old one.
func testRewrap(t *testing.T, open func(t *testing.T) SecretsStore) {
	s := secretsStore(t, open)
	plain := sealedFixture(t, s, testBox(t, "k1"))
	box := testBox(t, "k2", "k1")
	aad := fixtureAAD
	res, err := sealbox.Rewrap(t.Context(), s, box, sealbox.RewrapOptions{AAD: aad, InTx: s.InTx, Batch: 4})
	if err != nil {
		t.Fatal(err)
	}
	if res.Rewrapped != int64(len(plain)) || res.Failed != 0 || res.Changed != 0 {
		t.Fatalf("rewrap %+v, want %d rewrapped", res, len(plain))
	}
	uses, err := s.SealedUse(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range uses {
		if u.Version != "k2" {
			t.Errorf("%d %s values still under %s", u.Count, u.Kind, u.Version)
		}
	}
	onlyK2 := testBox(t, "k2")
	page, err := s.SealedValues(t.Context(), sealbox.Ref{}, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range page {
		a, _ := aad(v.Ref)
		got, err := onlyK2.Open(v.Value, a)
		if err != nil || string(got) != plain[v.Ref] {
			t.Errorf("%s opens under k2 alone as %q, %v", v.Ref, got, err)
		}
	}
	if err := sealbox.CheckRetire(t.Context(), s, "k1"); err != nil {
		t.Fatalf("k1 after the rewrap: %v", err)
	}
}
