package storetest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/sealbox"
	"github.com/nops-kernel/nops/internal/token"
)

// testSigningKeySealing covers the sealed material of token.KeyStore: a sealed key round-trips
// with no clear material, and SealSigningKey seals a clear row once, only while it still holds
// the clear value read, in the caller's transaction.
func testSigningKeySealing(t *testing.T, open func(t *testing.T) Store) {
	t.Run("sealed key round trip", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		ctx := t.Context()
		in := token.SigningKey{ID: "key_s", Algorithm: "EdDSA", Sealed: []byte{0x01, 0x02, 'k', '1', 0x00, 0xff}, CreatedAt: base}
		if err := s.CreateSigningKey(ctx, in); err != nil {
			t.Fatal(err)
		}
		k := signingKeyByID(t, s, "key_s")
		if !bytes.Equal(k.Sealed, in.Sealed) || k.Private != nil {
			t.Fatalf("stored sealed key = sealed %x, private %x; want sealed %x and no private", k.Sealed, k.Private, in.Sealed)
		}
	})

	t.Run("seal a clear row once", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		ctx := t.Context()
		if err := s.CreateSigningKey(ctx, token.SigningKey{ID: "key_c", Algorithm: "HS256", Private: []byte("clear-1"), CreatedAt: base}); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name, id     string
			clear, value []byte
		}{
			{"another clear value", "key_c", []byte("clear-2"), []byte("sealed-x")},
			{"a missing row", "key_none", []byte("clear-1"), []byte("sealed-x")},
		} {
			if ok, err := s.SealSigningKey(ctx, tc.id, tc.clear, tc.value); err != nil || ok {
				t.Fatalf("SealSigningKey over %s = %v, %v; want false, nil", tc.name, ok, err)
			}
		}
		if k := signingKeyByID(t, s, "key_c"); string(k.Private) != "clear-1" || k.Sealed != nil {
			t.Fatalf("refused seals changed the row: %+v", k)
		}
		for _, args := range [][2][]byte{{nil, []byte("sealed")}, {[]byte("clear-1"), nil}} {
			if _, err := s.SealSigningKey(ctx, "key_c", args[0], args[1]); err == nil {
				t.Fatalf("SealSigningKey(%q, %q) accepted an empty value", args[0], args[1])
			}
		}
		if ok, err := s.SealSigningKey(ctx, "key_c", []byte("clear-1"), []byte("sealed-1")); err != nil || !ok {
			t.Fatalf("SealSigningKey = %v, %v; want true", ok, err)
		}
		if k := signingKeyByID(t, s, "key_c"); string(k.Sealed) != "sealed-1" || k.Private != nil {
			t.Fatalf("sealed row = sealed %q, private %q; want sealed-1 and no private", k.Sealed, k.Private)
		}
		// Sealed already: a second seal of the same clear value writes nothing.
		if ok, err := s.SealSigningKey(ctx, "key_c", []byte("clear-1"), []byte("sealed-2")); err != nil || ok {
			t.Fatalf("second SealSigningKey = %v, %v; want false", ok, err)
		}
		if k := signingKeyByID(t, s, "key_c"); string(k.Sealed) != "sealed-1" {
			t.Fatalf("the second seal overwrote the first: %q", k.Sealed)
		}
	})

	t.Run("replicas racing seal once", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		ctx := t.Context()
		if err := s.CreateSigningKey(ctx, token.SigningKey{ID: "key_r", Algorithm: "HS256", Private: []byte("clear"), CreatedAt: base}); err != nil {
			t.Fatal(err)
		}
		const n = 8
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			winners []string
		)
		for i := range n {
			wg.Go(func() {
				value := "sealed-by-" + string(rune('a'+i))
				ok, err := s.SealSigningKey(ctx, "key_r", []byte("clear"), []byte(value))
				if err != nil {
					t.Errorf("SealSigningKey %d: %v", i, err)
					return
				}
				if ok {
					mu.Lock()
					winners = append(winners, value)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if len(winners) != 1 {
			t.Fatalf("%d seals succeeded (%v), want exactly 1", len(winners), winners)
		}
		if k := signingKeyByID(t, s, "key_r"); string(k.Sealed) != winners[0] {
			t.Fatalf("the row holds %q, the winner sealed %q", k.Sealed, winners[0])
		}
	})

	t.Run("in the caller's transaction", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		ctx := t.Context()
		if err := s.CreateSigningKey(ctx, token.SigningKey{ID: "key_t", Algorithm: "HS256", Private: []byte("clear"), CreatedAt: base}); err != nil {
			t.Fatal(err)
		}
		errRollback := errors.New("roll back")
		err := s.InTx(ctx, func(ctx context.Context) error {
			if ok, err := s.SealSigningKey(ctx, "key_t", []byte("clear"), []byte("sealed")); err != nil || !ok {
				t.Errorf("SealSigningKey in a transaction = %v, %v", ok, err)
			}
			return errRollback
		})
		if !errors.Is(err, errRollback) {
			t.Fatalf("InTx = %v", err)
		}
		if k := signingKeyByID(t, s, "key_t"); string(k.Private) != "clear" || k.Sealed != nil {
			t.Fatalf("a rolled-back seal left %+v", k)
		}
	})
}

func signingKeyByID(t *testing.T, s Store, id string) token.SigningKey {
	t.Helper()
	keys, err := s.SigningKeys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k.ID == id {
			return k
		}
	}
	t.Fatalf("signing key %s not stored", id)
	return token.SigningKey{}
}

// RawSigningKey is a row of signing_keys as a database dump holds it.
type RawSigningKey struct {
	Private, Sealed []byte // private_key, sealed_key (nil when NULL)
}

// RunSigningKeysAtRest runs the token service (with a real sealbox keyring) over an adapter and
// reads the table behind its back: no row holds its key material in clear, rows stored in clear
// before sealing are sealed at start, a key sealed under another KEK or for another row stops
// the start, and a rewrap under a promoted KEK keeps every key usable. raw returns every row of
// signing_keys by ID, read with SQL of the adapter's own.
func RunSigningKeysAtRest(t *testing.T, open func(t *testing.T) Store, raw func(t *testing.T, s Store) map[string]RawSigningKey) {
	t.Run("a dump holds no key material", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		ring := sealbox.NewKeyring(testBox(t, "k1"))
		for _, alg := range []string{token.AlgEdDSA, token.AlgHS256} {
			svc, err := token.New(t.Context(), s, tokenConfig(alg, ring), nil)
			if err != nil {
				t.Fatalf("token.New(%s): %v", alg, err)
			}
			if _, err := svc.Rotate(t.Context(), ""); err != nil {
				t.Fatalf("Rotate(%s): %v", alg, err)
			}
		}
		rows := raw(t, s)
		if len(rows) != 4 {
			t.Fatalf("%d rows, want 2 keys of each of 2 algorithms", len(rows))
		}
		for id, r := range rows {
			if len(r.Private) != 0 {
				t.Errorf("%s: private_key holds %d bytes, want none", id, len(r.Private))
			}
			if _, err := x509.ParsePKCS8PrivateKey(r.Private); err == nil {
				t.Errorf("%s: private_key parses as PKCS#8", id)
			}
			material, err := ring.Open(r.Sealed, token.SealAAD(id))
			if err != nil {
				t.Fatalf("%s: sealed_key does not open under the KEK: %v", id, err)
			}
			if len(material) < 32 || bytes.Contains(r.Sealed, material) || bytes.Contains(r.Sealed, material[:16]) {
				t.Errorf("%s: sealed_key holds the key material", id)
			}
			if v, _ := sealbox.Version(r.Sealed); v != "k1" {
				t.Errorf("%s: sealed under %q, want k1", id, v)
			}
		}
	})

	t.Run("clear rows are sealed at start", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		ctx := t.Context()
		_, pk, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(pk)
		if err != nil {
			t.Fatal(err)
		}
		// As a kernel of the previous version stored it.
		if err := s.CreateSigningKey(ctx, token.SigningKey{ID: "key_old", Algorithm: token.AlgEdDSA, Private: der, CreatedAt: time.Now().Add(-time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if r := raw(t, s)["key_old"]; !bytes.Equal(r.Private, der) || r.Sealed != nil {
			t.Fatal("the fixture is not a clear row")
		}
		ring := sealbox.NewKeyring(testBox(t, "k1"))
		svc, err := token.New(ctx, s, tokenConfig(token.AlgEdDSA, ring), nil)
		if err != nil {
			t.Fatalf("token.New over a clear row: %v", err)
		}
		r := raw(t, s)["key_old"]
		if len(r.Private) != 0 || bytes.Contains(r.Sealed, der) {
			t.Fatalf("after the start the row still holds the key in clear (private %d bytes)", len(r.Private))
		}
		if got, err := ring.Open(r.Sealed, token.SealAAD("key_old")); err != nil || !bytes.Equal(got, der) {
			t.Fatalf("the sealed row opens as %d bytes, %v; want the clear key", len(got), err)
		}
		// The same key signs: tokens issued before the upgrade keep verifying.
		raw1, _, err := svc.Issue(ctx, token.Claims{Subject: "usr_1"})
		if err != nil {
			t.Fatal(err)
		}
		if kidOfToken(t, raw1) != "key_old" {
			t.Fatalf("the service signs with %s, want the key sealed in place", kidOfToken(t, raw1))
		}
		// A restart opens it, verifies what the first run issued, and seals nothing again.
		again, err := token.New(ctx, s, tokenConfig(token.AlgEdDSA, ring), nil)
		if err != nil {
			t.Fatalf("restart: %v", err)
		}
		if _, err := again.Verify(ctx, raw1); err != nil {
			t.Fatalf("after a restart a token of the first run does not verify: %v", err)
		}
		if r2 := raw(t, s)["key_old"]; !bytes.Equal(r2.Sealed, r.Sealed) {
			t.Fatal("the restart sealed the row again")
		}

		// A kernel with another key file refuses to start, naming the key.
		_, err = token.New(ctx, s, tokenConfig(token.AlgEdDSA, sealbox.NewKeyring(testBox(t, "k9"))), nil)
		if err == nil || !strings.Contains(err.Error(), "key_old") || !strings.Contains(err.Error(), "key-encryption key") {
			t.Fatalf("start with another KEK = %v, want a refusal naming key_old and the key-encryption key", err)
		}
	})

	t.Run("a sealed value moved to another row does not open", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		ctx := t.Context()
		ring := sealbox.NewKeyring(testBox(t, "k1"))
		if _, err := token.New(ctx, s, tokenConfig(token.AlgEdDSA, ring), nil); err != nil {
			t.Fatal(err)
		}
		var sealed []byte
		for _, r := range raw(t, s) {
			sealed = r.Sealed
		}
		// An attacker with write access copies the sealed key onto a row of their own.
		if err := s.CreateSigningKey(ctx, token.SigningKey{ID: "key_moved", Algorithm: token.AlgEdDSA, Sealed: sealed, CreatedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
		_, err := token.New(ctx, s, tokenConfig(token.AlgEdDSA, ring), nil)
		if err == nil || !strings.Contains(err.Error(), "key_moved") {
			t.Fatalf("start with a moved sealed value = %v, want a refusal naming key_moved", err)
		}
	})

	t.Run("rewrap under a promoted KEK", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		ctx := t.Context()
		svc, err := token.New(ctx, s, tokenConfig(token.AlgES256, sealbox.NewKeyring(testBox(t, "k1"))), nil)
		if err != nil {
			t.Fatal(err)
		}
		issued, _, err := svc.Issue(ctx, token.Claims{Subject: "usr_1"})
		if err != nil {
			t.Fatal(err)
		}
		st, ok := s.(sealbox.Store)
		if !ok {
			t.Fatalf("%T is no sealbox.Store", s)
		}
		promoted := testBox(t, "k2", "k1")
		res, err := sealbox.Rewrap(ctx, st, promoted, sealbox.RewrapOptions{AAD: fixtureAAD, InTx: s.InTx})
		if err != nil || res.Rewrapped != 1 || res.Failed != 0 {
			t.Fatalf("rewrap = %+v, %v; want the one signing key rewrapped", res, err)
		}
		if err := sealbox.CheckRetire(ctx, st, "k1"); err != nil {
			t.Fatalf("k1 after the rewrap: %v", err)
		}
		// With k1 retired the key still opens, and tokens signed before keep verifying.
		after, err := token.New(ctx, s, tokenConfig(token.AlgES256, sealbox.NewKeyring(testBox(t, "k2"))), nil)
		if err != nil {
			t.Fatalf("start with k2 alone after the rewrap: %v", err)
		}
		if _, err := after.Verify(ctx, issued); err != nil {
			t.Fatalf("a token signed before the rewrap: %v", err)
		}
		// And k1 alone no longer opens it.
		if _, err := token.New(ctx, s, tokenConfig(token.AlgES256, sealbox.NewKeyring(testBox(t, "k1"))), nil); err == nil {
			t.Fatal("a kernel with only the retired KEK started")
		}
	})
}

func tokenConfig(alg string, sealer token.Sealer) token.Config {
	return token.Config{Issuer: "https://nops.test", Audience: "nops", Algorithm: alg, TTL: 15 * time.Minute, Sealer: sealer}
}

// kidOfToken returns the kid in the protected header of a compact JWS.
func kidOfToken(t *testing.T, raw string) string {
	t.Helper()
	head, _, _ := strings.Cut(raw, ".")
	b, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		t.Fatalf("token header: %v", err)
	}
	var h struct {
		KID string `json:"kid"`
	}
	if err := json.Unmarshal(b, &h); err != nil {
		t.Fatalf("token header: %v", err)
	}
	return h.KID
}
