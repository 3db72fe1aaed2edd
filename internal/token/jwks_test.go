package token_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"math/big"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/nops-kernel/nops/internal/token"
)

type jwksDoc struct {
	Keys []map[string]string `json:"keys"`
}

func parseJWKS(tb testing.TB, b []byte) jwksDoc {
	tb.Helper()
	var d jwksDoc
	if err := json.Unmarshal(b, &d); err != nil {
		tb.Fatalf("JWKS is not a key set: %v\n%s", err, b)
	}
	if d.Keys == nil {
		tb.Fatalf("JWKS has no keys array: %s", b)
	}
	return d
}

func b64url(tb testing.TB, s string) []byte {
	tb.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		tb.Fatalf("decode %q: %v", s, err)
	}
	return b
}

// verifyWithJWK rebuilds the public key from its JWK with the standard library only and checks
// the token's signature with it, as a third party holding only the JWKS would.
func verifyWithJWK(tb testing.TB, j map[string]string, raw string) {
	tb.Helper()
	i := strings.LastIndexByte(raw, '.')
	input, sig := []byte(raw[:i]), b64url(tb, raw[i+1:])
	digest := sha256.Sum256(input)
	var ok bool
	switch j["kty"] {
	case "OKP":
		if j["crv"] != "Ed25519" {
			tb.Fatalf("OKP curve %q", j["crv"])
		}
		ok = ed25519.Verify(ed25519.PublicKey(b64url(tb, j["x"])), input, sig)
	case "EC":
		if j["crv"] != "P-256" {
			tb.Fatalf("EC curve %q", j["crv"])
		}
		x, y := b64url(tb, j["x"]), b64url(tb, j["y"])
		if len(x) != 32 || len(y) != 32 {
			tb.Fatalf("EC coordinates of %d and %d bytes, want 32", len(x), len(y))
		}
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), slices.Concat([]byte{4}, x, y))
		if err != nil {
			tb.Fatalf("EC key from JWKS: %v", err)
		}
		ok = len(sig) == 64 && ecdsa.Verify(pub, digest[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:]))
	case "RSA":
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(b64url(tb, j["n"])), E: int(new(big.Int).SetBytes(b64url(tb, j["e"])).Int64())}
		ok = rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig) == nil
	default:
		tb.Fatalf("unexpected kty %q", j["kty"])
	}
	if !ok {
		tb.Fatalf("signature does not verify with the %s key from the JWKS", j["kty"])
	}
}

// One store holding a key of each algorithm: the JWKS publishes the three asymmetric ones, each
// usable by a third party to verify that algorithm's tokens, and never the HS256 key.
func TestJWKSPublishesAsymmetricKeys(t *testing.T) {
	clk := newClock()
	store := newFakeStore()
	tokens := map[string]string{}
	var last *token.Service
	for _, alg := range allAlgs {
		last = newService(t, store, clk, alg)
		tokens[alg] = issue(t, last, someClaims)
	}
	doc := parseJWKS(t, jwksOf(t, last))

	wantMembers := map[string][]string{
		"OKP": {"alg", "crv", "kid", "kty", "use", "x"},
		"EC":  {"alg", "crv", "kid", "kty", "use", "x", "y"},
		"RSA": {"alg", "e", "kid", "kty", "n", "use"},
	}
	wantKty := map[string]string{token.AlgEdDSA: "OKP", token.AlgES256: "EC", token.AlgRS256: "RSA"}
	var kids []string
	for _, j := range doc.Keys {
		kids = append(kids, j["kid"])
		members := slices.Sorted(func(yield func(string) bool) {
			for k := range j {
				if !yield(k) {
					return
				}
			}
		})
		if d := cmp.Diff(wantMembers[j["kty"]], members); d != "" {
			t.Errorf("members of %s key (-want +got):\n%s", j["kty"], d)
		}
		if j["use"] != "sig" || wantKty[j["alg"]] != j["kty"] {
			t.Errorf("key %s: use %q, alg %q, kty %q", j["kid"], j["use"], j["alg"], j["kty"])
		}
	}
	var wantKids []string
	for _, k := range store.all() {
		if k.Algorithm != token.AlgHS256 {
			wantKids = append(wantKids, k.ID)
		}
	}
	if d := cmp.Diff(wantKids, kids, cmpopts.SortSlices(func(a, b string) bool { return a < b })); d != "" {
		t.Fatalf("JWKS kids (-want +got):\n%s", d)
	}

	for _, alg := range []string{token.AlgEdDSA, token.AlgES256, token.AlgRS256} {
		t.Run(alg, func(t *testing.T) {
			kid := kidOf(t, tokens[alg])
			i := slices.IndexFunc(doc.Keys, func(j map[string]string) bool { return j["kid"] == kid })
			if i < 0 {
				t.Fatalf("kid %s not in JWKS", kid)
			}
			verifyWithJWK(t, doc.Keys[i], tokens[alg])
		})
	}
	t.Run("no symmetric material", func(t *testing.T) {
		requireNoSecret(t, jwksOf(t, last), store)
	})
}

func requireNoSecret(tb testing.TB, jwks []byte, store *fakeStore) {
	tb.Helper()
	for _, j := range parseJWKS(tb, jwks).Keys {
		if j["kty"] == "oct" || j["k"] != "" || j["alg"] == token.AlgHS256 {
			tb.Errorf("JWKS publishes a symmetric key: %v", j)
		}
	}
	for _, k := range store.all() {
		if k.Algorithm != token.AlgHS256 {
			continue
		}
		m := materialOf(tb, k)
		for _, enc := range []string{
			base64.RawURLEncoding.EncodeToString(m), base64.StdEncoding.EncodeToString(m),
			hex.EncodeToString(m), k.ID,
		} {
			if strings.Contains(string(jwks), enc) {
				tb.Errorf("JWKS contains HS256 key %s", k.ID)
			}
		}
	}
}

func TestJWKSNeverPublishesHS256(t *testing.T) {
	clk := newClock()
	t.Run("generated secret", func(t *testing.T) {
		store := newFakeStore()
		svc := newService(t, store, clk, token.AlgHS256)
		if got := string(jwksOf(t, svc)); got != `{"keys":[]}` {
			t.Errorf("JWKS = %s, want an empty key set", got)
		}
		requireNoSecret(t, jwksOf(t, svc), store)
	})
	t.Run("configured secret", func(t *testing.T) {
		secret := []byte(strings.Repeat("z", 40))
		svc := newService(t, newFakeStore(), clk, token.AlgHS256, func(c *token.Config) { c.HS256Secret = secret })
		jwks := string(jwksOf(t, svc))
		if jwks != `{"keys":[]}` {
			t.Errorf("JWKS = %s, want an empty key set", jwks)
		}
		if strings.Contains(jwks, kidOf(t, issue(t, svc, someClaims))) {
			t.Error("JWKS names the configured secret's kid")
		}
	})
}

func TestJWKSShowsKeysOfOtherReplicasAfterReload(t *testing.T) {
	clk := newClock()
	store := newFakeStore()
	ed := newService(t, store, clk, token.AlgEdDSA)
	es := newService(t, store, clk, token.AlgES256)
	esKID := kidOf(t, issue(t, es, someClaims))

	if n := len(parseJWKS(t, jwksOf(t, ed)).Keys); n != 1 {
		t.Fatalf("JWKS has %d keys before the reload, want 1", n)
	}
	if err := ed.Reload(t.Context()); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	doc := parseJWKS(t, jwksOf(t, ed))
	if !slices.ContainsFunc(doc.Keys, func(j map[string]string) bool { return j["kid"] == esKID }) {
		t.Errorf("JWKS after reload lacks the other replica's key %s: %+v", esKID, doc.Keys)
	}
}

func TestJWKSReturnsACopy(t *testing.T) {
	svc := newService(t, newFakeStore(), newClock(), token.AlgEdDSA)
	b := jwksOf(t, svc)
	want := string(b)
	clear(b)
	if got := string(jwksOf(t, svc)); got != want {
		t.Errorf("JWKS changed after the caller modified its copy: %s", got)
	}
}

func jwksOf(tb testing.TB, svc *token.Service) []byte {
	tb.Helper()
	b, err := svc.JWKS(tb.Context())
	if err != nil {
		tb.Fatalf("JWKS: %v", err)
	}
	return b
}
