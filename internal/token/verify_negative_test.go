package token_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/nops-kernel/nops/internal/token"
)

// The negative suite: every case is its own test or named subtest, and every rejection must be the
// one uniform errs.Unauthenticated "invalid or expired token".

// fixture is a service with its store, clock and the key it signs with, which lets a test forge
// tokens that differ from a valid one in exactly one respect.
type fixture struct {
	clk    *clock
	store  *fakeStore
	svc    *token.Service
	kid    string
	method jwt.SigningMethod
	priv   any
}

func newFixture(tb testing.TB, alg string) *fixture {
	tb.Helper()
	f := &fixture{clk: newClock(), store: newFakeStore()}
	f.svc = newService(tb, f.store, f.clk, alg)
	f.kid = kidOf(tb, issue(tb, f.svc, someClaims))
	f.method, f.priv = storedSigner(tb, f.store, f.kid)
	return f
}

// forge signs claims with the service's own key under its kid, with header changes applied.
func (f *fixture) forge(tb testing.TB, header map[string]any, claims jwt.MapClaims) string {
	tb.Helper()
	h := map[string]any{"kid": f.kid}
	for k, v := range header {
		h[k] = v
	}
	return sign(tb, f.method, f.priv, h, claims)
}

// claims returns valid claims with changes applied; a nil value removes the claim.
func (f *fixture) claims(changes map[string]any) jwt.MapClaims {
	c := validClaims(f.clk)
	for k, v := range changes {
		if v == nil {
			delete(c, k)
			continue
		}
		c[k] = v
	}
	return c
}

func (f *fixture) requireValid(tb testing.TB, raw string) {
	tb.Helper()
	if _, err := f.svc.Verify(tb.Context(), raw); err != nil {
		tb.Fatalf("Verify rejected a token it must accept: %v", err)
	}
}

func (f *fixture) requireRejected(tb testing.TB, raw string) {
	tb.Helper()
	_, err := f.svc.Verify(tb.Context(), raw)
	requireRejected(tb, err)
}

// The forging helpers must produce accepted tokens, or every rejection below proves nothing.
func TestForgedBaselineIsAccepted(t *testing.T) {
	f := newFixture(t, token.AlgEdDSA)
	f.requireValid(t, f.forge(t, nil, f.claims(nil)))
}

func TestVerifyRejectsAlgNone(t *testing.T) {
	f := newFixture(t, token.AlgEdDSA)
	payload := b64JSON(t, f.claims(nil))
	for _, alg := range []string{"none", "None", "NONE", "nOnE"} {
		for _, sig := range []struct{ name, value string }{
			{"empty signature", ""},
			{"non-empty signature", base64.RawURLEncoding.EncodeToString([]byte("signature"))},
		} {
			for _, withKID := range []bool{true, false} {
				name := alg + "/" + sig.name + "/without kid"
				header := map[string]any{"alg": alg, "typ": token.TokenType}
				if withKID {
					name = alg + "/" + sig.name + "/with our kid"
					header["kid"] = f.kid
				}
				t.Run(name, func(t *testing.T) {
					f.requireRejected(t, b64JSON(t, header)+"."+payload+"."+sig.value)
				})
			}
		}
	}
	t.Run("library none method", func(t *testing.T) {
		f.requireRejected(t, sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, map[string]any{"kid": f.kid}, f.claims(nil)))
	})
}

// publicKeyEncodings are the byte strings an attacker may try as an HMAC secret.
func publicKeyEncodings(tb testing.TB, pub crypto.PublicKey) map[string][]byte {
	tb.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		tb.Fatal(err)
	}
	enc := map[string][]byte{
		"PKIX DER": der,
		"PKIX PEM": pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}),
	}
	enc["PKIX PEM without trailing newline"] = []byte(strings.TrimSpace(string(enc["PKIX PEM"])))
	switch k := pub.(type) {
	case ed25519.PublicKey:
		enc["raw"] = k
	case *rsa.PublicKey:
		pkcs1 := x509.MarshalPKCS1PublicKey(k)
		enc["PKCS1 DER"] = pkcs1
		enc["PKCS1 PEM"] = pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: pkcs1})
	}
	return enc
}

func TestVerifyRejectsHS256SignedWithPublicKey(t *testing.T) {
	for _, alg := range []string{token.AlgEdDSA, token.AlgRS256} {
		t.Run(alg+" server", func(t *testing.T) {
			f := newFixture(t, alg)
			pub := f.priv.(crypto.Signer).Public()
			encodings := publicKeyEncodings(t, pub)
			encodings["JWKS document"] = jwksOf(t, f.svc)
			for name, secret := range encodings {
				t.Run(name, func(t *testing.T) {
					f.requireRejected(t, sign(t, jwt.SigningMethodHS256, secret, map[string]any{"kid": f.kid}, f.claims(nil)))
				})
			}
		})
	}
}

// A header alg other than the key's is refused even when the signature is valid under the key's
// material for that algorithm.
func TestVerifyRejectsOtherAlgorithmUnderOurKID(t *testing.T) {
	rs := newFixture(t, token.AlgRS256)
	for _, m := range []jwt.SigningMethod{jwt.SigningMethodPS256, jwt.SigningMethodRS384, jwt.SigningMethodRS512} {
		t.Run("RS256 key signing "+m.Alg(), func(t *testing.T) {
			rs.requireRejected(t, sign(t, m, rs.priv, map[string]any{"kid": rs.kid}, rs.claims(nil)))
		})
	}
	ed := newFixture(t, token.AlgEdDSA)
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("EdDSA kid with attacker ES256", func(t *testing.T) {
		ed.requireRejected(t, sign(t, jwt.SigningMethodES256, ecKey, map[string]any{"kid": ed.kid}, ed.claims(nil)))
	})
	t.Run("EdDSA kid with attacker RS256", func(t *testing.T) {
		ed.requireRejected(t, sign(t, jwt.SigningMethodRS256, rs.priv, map[string]any{"kid": ed.kid}, ed.claims(nil)))
	})
	t.Run("our EdDSA key under another spelling of alg", func(t *testing.T) {
		for _, alg := range []string{"Ed25519", "eddsa", "EDDSA", "EdDSA "} {
			t.Run(alg, func(t *testing.T) {
				ed.requireRejected(t, ed.forge(t, map[string]any{"alg": alg}, ed.claims(nil)))
			})
		}
	})
}

// The pin compares the header's alg string itself, not only the method it resolves to, so an alias
// registered in the library's global method table by any package cannot widen it.
func TestVerifyRejectsRegisteredAliasOfOurAlgorithm(t *testing.T) {
	const alias = "EdDSA-alias-registered-by-test"
	jwt.RegisterSigningMethod(alias, func() jwt.SigningMethod { return jwt.SigningMethodEdDSA })
	f := newFixture(t, token.AlgEdDSA)
	// Signed by our key over a header naming the alias: only the alg string differs.
	f.requireRejected(t, f.forge(t, map[string]any{"alg": alias}, f.claims(nil)))
}

func TestVerifyRejectsUnknownKID(t *testing.T) {
	f := newFixture(t, token.AlgEdDSA)
	f.clk.Advance(10 * time.Second) // a reload is allowed, and finds nothing
	f.requireRejected(t, f.forge(t, map[string]any{"kid": "key_01HZZZZZZZZZZZZZZZZZZZZZZZ"}, f.claims(nil)))
}

// Malformed kids are refused before any lookup: even signed by our key, and even when a reload
// would be allowed, they never reach the store.
func TestVerifyRejectsMalformedKID(t *testing.T) {
	f := newFixture(t, token.AlgEdDSA)
	f.clk.Advance(time.Minute)
	before := f.store.listCalls.Load()
	for _, tc := range []struct {
		name string
		kid  any
	}{
		{"path traversal", "../../etc/passwd"},
		{"path traversal after our kid", f.kid + "/../../etc/passwd"},
		{"url-encoded traversal", "%2e%2e%2fetc%2fpasswd"},
		{"SQL injection", "' OR 1=1 --"},
		{"SQL injection after our kid", f.kid + "' OR '1'='1"},
		{"NUL byte", "\x00"},
		{"our kid with NUL byte", f.kid + "\x00"},
		{"our kid with newline", f.kid + "\n"},
		{"our kid with space", f.kid + " "},
		{"non-ASCII", "key_é"},
		{"65 characters", strings.Repeat("a", 65)},
		{"very long", strings.Repeat("k", 4000)},
		{"empty", ""},
		{"number", 42},
		{"null", nil},
		{"array", []string{f.kid}},
		{"object", map[string]string{"kid": f.kid}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := map[string]any{"alg": f.method.Alg(), "typ": token.TokenType, "kid": tc.kid}
			payload := b64JSON(t, f.claims(nil))
			signingInput := b64JSON(t, h) + "." + payload
			sig, err := f.method.Sign(signingInput, f.priv)
			if err != nil {
				t.Fatal(err)
			}
			f.requireRejected(t, signingInput+"."+base64.RawURLEncoding.EncodeToString(sig))
		})
	}
	if got := f.store.listCalls.Load() - before; got != 0 {
		t.Errorf("malformed kids caused %d store loads, want 0", got)
	}
}

func TestVerifyRejectsMissingKID(t *testing.T) {
	f := newFixture(t, token.AlgEdDSA)
	f.requireRejected(t, sign(t, f.method, f.priv, map[string]any{"kid": nil}, f.claims(nil)))
}

// keyURLServer stands for an attacker's server; it counts every request so a test can show the
// verifier never fetched anything.
func keyURLServer(tb testing.TB, attackerJWKS []byte) (*httptest.Server, *atomic.Int64) {
	tb.Helper()
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(attackerJWKS)
	}))
	tb.Cleanup(srv.Close)
	return srv, &hits
}

func attackerCert(tb testing.TB, priv ed25519.PrivateKey) []byte {
	tb.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "attacker"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, priv.Public(), priv)
	if err != nil {
		tb.Fatal(err)
	}
	return der
}

// A token signed by an attacker's key, naming that key through jku, x5u, jwk or x5c, is checked
// against our key only, and the URLs are never fetched.
func TestVerifyRejectsAttackerKeyHeaders(t *testing.T) {
	f := newFixture(t, token.AlgEdDSA)
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	attackerJWK := map[string]any{"kty": "OKP", "crv": "Ed25519", "x": base64.RawURLEncoding.EncodeToString(pub), "kid": "attacker", "alg": "EdDSA", "use": "sig"}
	jwks, _ := json.Marshal(map[string]any{"keys": []any{attackerJWK}})
	srv, hits := keyURLServer(t, jwks)
	x5c := []string{base64.StdEncoding.EncodeToString(attackerCert(t, priv))}

	for _, tc := range []struct {
		name   string
		header map[string]any
	}{
		{"jku", map[string]any{"jku": srv.URL + "/jwks.json"}},
		{"x5u", map[string]any{"x5u": srv.URL + "/cert.pem"}},
		{"jwk", map[string]any{"jwk": attackerJWK}},
		{"x5c", map[string]any{"x5c": x5c}},
		{"all of them", map[string]any{"jku": srv.URL + "/jwks.json", "x5u": srv.URL + "/cert.pem", "jwk": attackerJWK, "x5c": x5c}},
	} {
		for _, kid := range []string{f.kid, "attacker"} {
			t.Run(tc.name+"/kid "+kid, func(t *testing.T) {
				h := map[string]any{"kid": kid}
				for k, v := range tc.header {
					h[k] = v
				}
				f.requireRejected(t, sign(t, jwt.SigningMethodEdDSA, priv, h, f.claims(nil)))
			})
		}
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("attacker's server received %d requests, want 0", n)
	}
}

// The same headers on a token signed by our key change nothing: they are ignored, not obeyed.
func TestVerifyIgnoresKeyHeadersOnOurTokens(t *testing.T) {
	f := newFixture(t, token.AlgEdDSA)
	srv, hits := keyURLServer(t, []byte(`{"keys":[]}`))
	f.requireValid(t, f.forge(t, map[string]any{"jku": srv.URL + "/jwks.json", "x5u": srv.URL + "/cert.pem", "jwk": map[string]any{"kty": "OKP"}}, f.claims(nil)))
	if n := hits.Load(); n != 0 {
		t.Errorf("server received %d requests, want 0", n)
	}
}

func TestVerifyRejectsExpired(t *testing.T) {
	f := newFixture(t, token.AlgEdDSA)
	now := f.clk.Now()
	old := map[string]any{"iat": now.Add(-time.Hour).Unix(), "nbf": now.Add(-time.Hour).Unix()}
	for name, exp := range map[string]time.Time{
		"at the leeway":     now.Add(-testLeeway),
		"beyond the leeway": now.Add(-testLeeway - time.Second),
		"long ago":          now.Add(-30 * 24 * time.Hour),
	} {
		t.Run(name, func(t *testing.T) {
			c := f.claims(old)
			c["exp"] = exp.Unix()
			f.requireRejected(t, f.forge(t, nil, c))
		})
	}
	t.Run("issued token after its lifetime and the leeway", func(t *testing.T) {
		raw := issue(t, f.svc, someClaims)
		f.clk.Advance(testTTL + testLeeway)
		f.requireRejected(t, raw)
	})
}

// Clock skew within Config.Leeway is tolerated on exp, nbf and iat.
func TestVerifyAcceptsWithinLeeway(t *testing.T) {
	f := newFixture(t, token.AlgEdDSA)
	now := f.clk.Now()
	within := testLeeway - time.Second
	t.Run("expired within the leeway", func(t *testing.T) {
		f.requireValid(t, f.forge(t, nil, f.claims(map[string]any{"exp": now.Add(-within).Unix(), "iat": now.Add(-time.Hour).Unix(), "nbf": now.Add(-time.Hour).Unix()})))
	})
	t.Run("nbf in the future within the leeway", func(t *testing.T) {
		f.requireValid(t, f.forge(t, nil, f.claims(map[string]any{"nbf": now.Add(testLeeway).Unix()})))
	})
	t.Run("iat in the future within the leeway", func(t *testing.T) {
		f.requireValid(t, f.forge(t, nil, f.claims(map[string]any{"iat": now.Add(testLeeway).Unix()})))
	})
	t.Run("issued token just past its lifetime", func(t *testing.T) {
		raw := issue(t, f.svc, someClaims)
		f.clk.Advance(testTTL + within)
		defer f.clk.Advance(-(testTTL + within))
		f.requireValid(t, raw)
	})
}

func TestVerifyRejectsNotYetValid(t *testing.T) {
	f := newFixture(t, token.AlgEdDSA)
	now := f.clk.Now()
	t.Run("nbf beyond the leeway", func(t *testing.T) {
		f.requireRejected(t, f.forge(t, nil, f.claims(map[string]any{"nbf": now.Add(testLeeway + time.Second).Unix()})))
	})
	t.Run("iat beyond the leeway", func(t *testing.T) {
		f.requireRejected(t, f.forge(t, nil, f.claims(map[string]any{"iat": now.Add(testLeeway + time.Second).Unix()})))
	})
}

func TestVerifyRejectsMissingExp(t *testing.T) {
	f := newFixture(t, token.AlgEdDSA)
	f.requireRejected(t, f.forge(t, nil, f.claims(map[string]any{"exp": nil})))
}

func TestVerifyRejectsMalformedExp(t *testing.T) {
	f := newFixture(t, token.AlgEdDSA)
	for name, exp := range map[string]any{"string": "tomorrow", "object": map[string]int{"t": 1}, "bool": true} {
		t.Run(name, func(t *testing.T) {
			f.requireRejected(t, f.forge(t, nil, f.claims(map[string]any{"exp": exp})))
		})
	}
}

func TestVerifyRejectsWrongAudience(t *testing.T) {
	f := newFixture(t, token.AlgEdDSA)
	for name, aud := range map[string]any{
		"other string": "other-api",
		"other array":  []string{"other-api"},
		"prefix":       testAudience + "-admin",
		"case":         strings.ToUpper(testAudience),
		"empty":        "",
	} {
		t.Run(name, func(t *testing.T) {
			f.requireRejected(t, f.forge(t, nil, f.claims(map[string]any{"aud": aud})))
		})
	}
	t.Run("missing", func(t *testing.T) {
		f.requireRejected(t, f.forge(t, nil, f.claims(map[string]any{"aud": nil})))
	})
}

func TestVerifyRejectsWrongIssuer(t *testing.T) {
	f := newFixture(t, token.AlgEdDSA)
	for name, iss := range map[string]any{
		"other":          "https://evil.example",
		"trailing slash": testIssuer + "/",
		"empty":          "",
		"array":          []string{testIssuer},
	} {
		t.Run(name, func(t *testing.T) {
			f.requireRejected(t, f.forge(t, nil, f.claims(map[string]any{"iss": iss})))
		})
	}
	t.Run("missing", func(t *testing.T) {
		f.requireRejected(t, f.forge(t, nil, f.claims(map[string]any{"iss": nil})))
	})
}

func TestVerifyRejectsMissingSubjectOrTokenID(t *testing.T) {
	f := newFixture(t, token.AlgEdDSA)
	for name, change := range map[string]map[string]any{
		"missing sub": {"sub": nil},
		"empty sub":   {"sub": ""},
		"missing jti": {"jti": nil},
		"empty jti":   {"jti": ""},
	} {
		t.Run(name, func(t *testing.T) {
			f.requireRejected(t, f.forge(t, nil, f.claims(change)))
		})
	}
}

func TestVerifyRejectsMalformedRolesOrScope(t *testing.T) {
	f := newFixture(t, token.AlgEdDSA)
	for name, change := range map[string]map[string]any{
		"roles as string": {"roles": "SUPER_ADMIN"},
		"scope as array":  {"scope": []string{"agents:write"}},
	} {
		t.Run(name, func(t *testing.T) {
			f.requireRejected(t, f.forge(t, nil, f.claims(change)))
		})
	}
}

// Only access tokens (typ at+jwt) are accepted, so other JWTs our keys might sign cannot stand in.
func TestVerifyRejectsOtherTokenTypes(t *testing.T) {
	f := newFixture(t, token.AlgEdDSA)
	for name, typ := range map[string]any{"JWT": "JWT", "id token": "id_token+jwt", "number": 1, "missing": nil} {
		t.Run(name, func(t *testing.T) {
			f.requireRejected(t, f.forge(t, map[string]any{"typ": typ}, f.claims(nil)))
		})
	}
	t.Run("media type form accepted", func(t *testing.T) {
		f.requireValid(t, f.forge(t, map[string]any{"typ": "application/AT+JWT"}, f.claims(nil)))
	})
}

func TestVerifyRejectsCritHeader(t *testing.T) {
	f := newFixture(t, token.AlgEdDSA)
	f.requireRejected(t, f.forge(t, map[string]any{"crit": []string{"exp"}, "exp": 1}, f.claims(nil)))
}

func TestVerifyRejectsTamperedToken(t *testing.T) {
	f := newFixture(t, token.AlgEdDSA)
	raw := issue(t, f.svc, someClaims)
	header, payload, parts := segments(t, raw)
	for _, tc := range []struct {
		name   string
		change func(h, p map[string]any)
	}{
		{"subject", func(_, p map[string]any) { p["sub"] = "usr_admin" }},
		{"roles", func(_, p map[string]any) { p["roles"] = []string{"SUPER_ADMIN"} }},
		{"scope", func(_, p map[string]any) { p["scope"] = "agents:read agents:write admin" }},
		{"tenant", func(_, p map[string]any) { p["tenant"] = "ten_other" }},
		{"tenant removed", func(_, p map[string]any) { delete(p, "tenant") }},
		{"expiry", func(_, p map[string]any) { p["exp"] = p["exp"].(float64) + 3600 }},
		{"header typ", func(h, _ map[string]any) { h["typ"] = "AT+JWT" }},
		{"header extra member", func(h, _ map[string]any) { h["x"] = 1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, p := clone(t, header), clone(t, payload)
			tc.change(h, p)
			f.requireRejected(t, b64JSON(t, h)+"."+b64JSON(t, p)+"."+parts[2])
		})
	}

	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		t.Fatal(err)
	}
	sigCases := map[string]string{
		"signature bit flipped": flip(sig, len(sig)-1),
		"signature truncated":   base64.RawURLEncoding.EncodeToString(sig[:len(sig)-1]),
		"signature removed":     "",
		"signature doubled":     base64.RawURLEncoding.EncodeToString(append(append([]byte{}, sig...), sig...)),
		"signature padded":      parts[2] + "==",
		// The last character of a 64-byte signature carries 4 unused bits; setting one gives a
		// second spelling of the same bytes, which strict decoding refuses.
		"signature with non-zero padding bits": nonCanonical(t, parts[2]),
	}
	for name, s := range sigCases {
		t.Run(name, func(t *testing.T) {
			f.requireRejected(t, parts[0]+"."+parts[1]+"."+s)
		})
	}
	t.Run("payload with padding", func(t *testing.T) {
		f.requireRejected(t, parts[0]+"."+parts[1]+"="+"."+parts[2])
	})
	f.requireValid(t, raw)
}

func clone(tb testing.TB, m map[string]any) map[string]any {
	tb.Helper()
	b, _ := json.Marshal(m)
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		tb.Fatal(err)
	}
	return out
}

func flip(b []byte, i int) string {
	c := append([]byte{}, b...)
	c[i] ^= 1
	return base64.RawURLEncoding.EncodeToString(c)
}

func nonCanonical(tb testing.TB, s string) string {
	tb.Helper()
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alphabet, s[len(s)-1])
	if i < 0 || i&0xF != 0 {
		tb.Fatalf("signature %q does not end in a character with unused bits", s)
	}
	out := s[:len(s)-1] + string(alphabet[i|1])
	if b1, _ := base64.RawURLEncoding.DecodeString(s); string(b1) != mustDecode(tb, out) {
		tb.Fatal("non-canonical spelling decodes to other bytes")
	}
	return out
}

func mustDecode(tb testing.TB, s string) string {
	tb.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

func TestVerifyRejectsGarbage(t *testing.T) {
	f := newFixture(t, token.AlgEdDSA)
	valid := issue(t, f.svc, someClaims)
	for name, raw := range map[string]string{
		"word":                   "garbage",
		"dots":                   "..",
		"four dots":              "....",
		"three letters":          "a.b.c",
		"two segments":           strings.Join(strings.Split(valid, ".")[:2], "."),
		"four segments":          valid + ".x",
		"bearer prefix":          "Bearer " + valid,
		"leading space":          " " + valid,
		"trailing newline":       valid + "\n",
		"newline inside":         valid[:20] + "\n" + valid[20:],
		"CR inside signature":    valid[:len(valid)-10] + "\r" + valid[len(valid)-10:],
		"header not json":        base64.RawURLEncoding.EncodeToString([]byte("{kid")) + ".e30.",
		"header null":            base64.RawURLEncoding.EncodeToString([]byte("null")) + ".e30.",
		"header array":           base64.RawURLEncoding.EncodeToString([]byte("[]")) + ".e30.",
		"header std base64":      base64.StdEncoding.EncodeToString([]byte(`{"alg":"EdDSA","kid":"`+f.kid+`"}`)) + ".e30.",
		"payload not json":       strings.Split(valid, ".")[0] + "." + base64.RawURLEncoding.EncodeToString([]byte("not json")) + "." + strings.Split(valid, ".")[2],
		"binary":                 "\x00\xff\xfe.\x01.\x02",
		"unicode":                "éé.üü.öö",
		"json instead of jwt":    `{"alg":"none"}`,
		"jws json serialization": `{"payload":"e30","signatures":[{"protected":"e30","signature":""}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			f.requireRejected(t, raw)
		})
	}
}

func TestVerifyRejectsEmpty(t *testing.T) {
	f := newFixture(t, token.AlgEdDSA)
	f.requireRejected(t, "")
}

// Tokens longer than 8 KiB are refused, even validly signed; one of exactly 8 KiB is not.
func TestVerifyRejectsOversized(t *testing.T) {
	f := newFixture(t, token.AlgEdDSA)
	withPad := func(n int) string {
		return f.forge(t, nil, f.claims(map[string]any{"pad": strings.Repeat("p", n)}))
	}
	n := (token.MaxTokenBytes - len(withPad(0))) * 3 / 4
	for len(withPad(n+1)) <= token.MaxTokenBytes {
		n++
	}
	for len(withPad(n)) > token.MaxTokenBytes {
		n--
	}
	atLimit, over := withPad(n), withPad(n+1)
	if len(atLimit) > token.MaxTokenBytes || len(over) <= token.MaxTokenBytes {
		t.Fatalf("sizes %d and %d do not straddle %d", len(atLimit), len(over), token.MaxTokenBytes)
	}
	t.Run("at the limit", func(t *testing.T) { f.requireValid(t, atLimit) })
	t.Run("over the limit", func(t *testing.T) { f.requireRejected(t, over) })
	t.Run("one megabyte", func(t *testing.T) { f.requireRejected(t, withPad(1<<20)) })
}

func TestVerifyRejectsSignatureFromAnotherKey(t *testing.T) {
	for _, alg := range []string{token.AlgEdDSA, token.AlgES256, token.AlgHS256} {
		t.Run(alg, func(t *testing.T) {
			f := newFixture(t, alg)
			other := newStoredKey(t, alg, "key_OTHER", f.clk.Now())
			var priv any = other.Private
			if alg != token.AlgHS256 {
				priv = mustPKCS8(t, other.Private)
			}
			f.requireRejected(t, sign(t, f.method, priv, map[string]any{"kid": f.kid}, f.claims(nil)))
		})
	}
	t.Run("token of another kernel", func(t *testing.T) {
		f := newFixture(t, token.AlgEdDSA)
		otherKernel := newService(t, newFakeStore(), f.clk, token.AlgEdDSA)
		f.clk.Advance(10 * time.Second)
		f.requireRejected(t, issue(t, otherKernel, someClaims))
	})
}
