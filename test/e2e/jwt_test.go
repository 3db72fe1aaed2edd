package e2e

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/nops-kernel/nops/internal/kernel"
	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
	"github.com/nops-kernel/nops/internal/sealbox"
	"github.com/nops-kernel/nops/internal/token"
)

// forger signs tokens with the running kernel's own EdDSA key (read from its database), so the
// negative cases below fail for the reason they name and not for a bad signature.
type forger struct {
	kid  string
	priv crypto.Signer
	iss  string
	aud  string
}

func newForger(t *testing.T, k *kerneltest.Kernel) forger {
	t.Helper()
	ctx := context.Background()
	st, err := kernel.OpenStore(ctx, k.Config, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	keys, err := st.SigningKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range keys {
		if key.Algorithm != "EdDSA" {
			continue
		}
		// Stored sealed under the kernel's key-encryption key (signing.kek_file).
		kek, err := sealbox.LoadOrCreateFile(k.Config.KEKPath())
		if err != nil {
			t.Fatal(err)
		}
		material, err := kek.Open(key.Sealed, token.SealAAD(key.ID))
		if err != nil {
			t.Fatal(err)
		}
		priv, err := x509.ParsePKCS8PrivateKey(material)
		if err != nil {
			t.Fatal(err)
		}
		return forger{kid: key.ID, priv: priv.(crypto.Signer), iss: k.Config.Auth.Issuer, aud: k.Config.Auth.Audience}
	}
	t.Fatal("kernel has no EdDSA key")
	return forger{}
}

func (f forger) claims() jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{
		"sub": "usr_forged", "roles": []string{"SUPER_ADMIN"}, "scope": "system:read system:write",
		"iss": f.iss, "aud": f.aud, "iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(),
		"jti": "jti_forged",
	}
}

func (f forger) sign(t *testing.T, claims jwt.MapClaims, header map[string]any) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
	tok.Header["kid"] = f.kid
	tok.Header["typ"] = "at+jwt"
	for k, v := range header {
		tok.Header[k] = v
	}
	s, err := tok.SignedString(f.priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func b64(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

// unsigned builds header.payload.signature by hand, for tokens no library would sign.
func unsigned(header, claims map[string]any, sig string) string {
	return b64(header) + "." + b64(claims) + "." + sig
}

func TestJWTNegative(t *testing.T) {
	k := kerneltest.Start(t)
	f := newForger(t, k)

	// Sanity: a correctly forged token is accepted, so each rejection below is for its own reason.
	resp, body := k.Do(t, "GET", "/v1/auth/whoami", nil, "Authorization: Bearer "+f.sign(t, f.claims(), nil))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("baseline token refused: %d %s", resp.StatusCode, body)
	}

	pubDER, err := x509.MarshalPKIXPublicKey(f.priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	hsWith := func(secret []byte) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, f.claims())
		tok.Header["kid"] = f.kid
		tok.Header["typ"] = "at+jwt"
		s, err := tok.SignedString(secret)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	with := func(mut func(jwt.MapClaims)) string {
		c := f.claims()
		mut(c)
		return f.sign(t, c, nil)
	}
	valid := f.sign(t, f.claims(), nil)
	parts := strings.Split(valid, ".")
	tamperedClaims := f.claims()
	tamperedClaims["sub"] = "usr_someone_else"
	tampered := parts[0] + "." + b64(tamperedClaims) + "." + parts[2]
	noneClaims := map[string]any(f.claims())

	cases := map[string]string{
		"alg none":                  unsigned(map[string]any{"alg": "none", "typ": "at+jwt", "kid": f.kid}, noneClaims, ""),
		"alg None":                  unsigned(map[string]any{"alg": "None", "typ": "at+jwt", "kid": f.kid}, noneClaims, ""),
		"alg NONE":                  unsigned(map[string]any{"alg": "NONE", "typ": "at+jwt", "kid": f.kid}, noneClaims, ""),
		"alg nOnE":                  unsigned(map[string]any{"alg": "nOnE", "typ": "at+jwt", "kid": f.kid}, noneClaims, ""),
		"alg none with signature":   unsigned(map[string]any{"alg": "none", "typ": "at+jwt", "kid": f.kid}, noneClaims, parts[2]),
		"HS256 with public key PEM": hsWith(pubPEM),
		"HS256 with public key DER": hsWith(pubDER),
		"unknown kid":               f.sign(t, f.claims(), map[string]any{"kid": "key_01unknown"}),
		"kid path traversal":        f.sign(t, f.claims(), map[string]any{"kid": "../../../../etc/passwd"}),
		"kid SQL injection":         f.sign(t, f.claims(), map[string]any{"kid": "' OR '1'='1' --"}),
		"kid NUL byte":              f.sign(t, f.claims(), map[string]any{"kid": f.kid + "\x00"}),
		"missing kid":               f.sign(t, f.claims(), map[string]any{"kid": nil}),
		"jku elsewhere":             attackerSigned(t, f, "jku", "https://attacker.example/jwks.json"),
		"x5u elsewhere":             attackerSigned(t, f, "x5u", "https://attacker.example/cert.pem"),
		"jwk embedded":              attackerSigned(t, f, "jwk", nil),
		"expired":                   with(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-2 * time.Minute).Unix() }),
		"nbf in the future":         with(func(c jwt.MapClaims) { c["nbf"] = time.Now().Add(5 * time.Minute).Unix() }),
		"missing exp":               with(func(c jwt.MapClaims) { delete(c, "exp") }),
		"wrong aud":                 with(func(c jwt.MapClaims) { c["aud"] = "someone-else" }),
		"wrong iss":                 with(func(c jwt.MapClaims) { c["iss"] = "https://evil.example" }),
		"tampered payload":          tampered,
		"garbage":                   "this.is.not-a-jwt",
		"not base64":                "%%%.%%%.%%%",
		"two segments":              parts[0] + "." + parts[1],
		"empty":                     "",
		"oversized":                 parts[0] + "." + strings.Repeat("A", 16<<10) + "." + parts[2],
	}
	for name, tok := range cases {
		t.Run(name, func(t *testing.T) {
			resp, body := k.Do(t, "GET", "/v1/auth/whoami", nil, "Authorization: Bearer "+tok)
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401; body %s", resp.StatusCode, body)
			}
			p := decodeProblem(t, resp, body)
			if p.Code != "unauthenticated" {
				t.Errorf("code %q", p.Code)
			}
			// One uniform answer: nothing tells an attacker which check failed.
			if name != "empty" {
				if p.Detail != "invalid or expired token" {
					t.Errorf("detail %q, want the uniform message", p.Detail)
				}
				if got := resp.Header.Get("WWW-Authenticate"); !strings.Contains(got, `error="invalid_token"`) {
					t.Errorf("WWW-Authenticate = %q", got)
				}
			}
		})
	}
}

// attackerSigned signs with an attacker's key and points a header at it; the kernel must verify
// only against its own key named by kid.
func attackerSigned(t *testing.T, f forger, header string, value any) string {
	t.Helper()
	attacker := newEd25519(t)
	if value == nil {
		value = map[string]any{"kty": "OKP", "crv": "Ed25519", "x": base64.RawURLEncoding.EncodeToString(attacker.Public().(ed25519.PublicKey))}
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, f.claims())
	tok.Header["kid"] = f.kid
	tok.Header["typ"] = "at+jwt"
	tok.Header[header] = value
	s, err := tok.SignedString(attacker)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestScopeRequired(t *testing.T) {
	k := kerneltest.Start(t)
	full := k.Token(t, "")
	narrow := k.Token(t, "system:write") // the admin's role grants system:read, but this token leaves it out

	resp, body := k.Do(t, "GET", "/v1/system/config", nil, "Authorization: Bearer "+full)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("full token: %d %s", resp.StatusCode, body)
	}
	resp, body = k.Do(t, "GET", "/v1/system/config", nil, "Authorization: Bearer "+narrow)
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("token without system:read: %d %s, want 403", resp.StatusCode, body)
	}
	if p := decodeProblem(t, resp, body); p.Code != "forbidden" {
		t.Errorf("code %q", p.Code)
	}
	if got := resp.Header.Get("WWW-Authenticate"); !strings.Contains(got, "insufficient_scope") {
		t.Errorf("WWW-Authenticate = %q", got)
	}
	// The same narrow token is still a valid credential where no scope is needed.
	resp, body = k.Do(t, "GET", "/v1/auth/whoami", nil, "Authorization: Bearer "+narrow)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"scopes":["system:write"]`) {
		t.Fatalf("whoami with narrow token: %d %s", resp.StatusCode, body)
	}
}

func TestTokenScopeNotGranted(t *testing.T) {
	k := kerneltest.Start(t)
	resp, body := k.Do(t, "POST", "/v1/auth/token", map[string]string{"username": "admin", "password": kerneltest.AdminPassword, "scope": "tenants:everything"})
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("status %d %s", resp.StatusCode, body)
	}
	if p := decodeProblem(t, resp, body); len(p.Errors) != 1 || p.Errors[0].Name != "body.scope" {
		t.Errorf("problem %+v", p)
	}
}

func TestLoginFailures(t *testing.T) {
	k := kerneltest.Start(t)
	for _, c := range []map[string]string{
		{"username": "admin", "password": "wrong-password"},
		{"username": "nobody", "password": "whatever"},
	} {
		resp, body := k.Do(t, "POST", "/v1/auth/token", c)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("%v: %d %s", c, resp.StatusCode, body)
		}
		if p := decodeProblem(t, resp, body); p.Detail != "invalid username or password" {
			t.Errorf("detail %q: unknown users and wrong passwords must read the same", p.Detail)
		}
	}
	resp, body := k.Do(t, "GET", "/metrics", nil)
	if resp.StatusCode != 200 || !strings.Contains(string(body), "nops_auth_login_failures_total") {
		t.Fatalf("metrics lack the login failure counter: %d", resp.StatusCode)
	}
}
