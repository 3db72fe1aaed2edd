package token_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/goleak"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/sealbox"
	"github.com/nops-kernel/nops/internal/token"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	testIssuer   = "https://kernel.nops.test"
	testAudience = "nops-api"
	testTTL      = 15 * time.Minute
	testLeeway   = 30 * time.Second
)

// clock is a settable time source for Config.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func testConfig(clk *clock, alg string) token.Config {
	return token.Config{
		Issuer:    testIssuer,
		Audience:  testAudience,
		Algorithm: alg,
		TTL:       testTTL,
		Leeway:    testLeeway,
		Now:       clk.Now,
		Sealer:    testSealer,
	}
}

// testSealer is the key-encryption keyring every test service seals its keys with: a real
// sealbox keyring over a random KEK.
var testSealer = newKeyring("kek-test")

// newKeyring returns a sealbox keyring over one random KEK of version.
func newKeyring(version string) *sealbox.Keyring {
	secret := make([]byte, sealbox.KeyLen)
	if _, err := rand.Read(secret); err != nil {
		panic(err)
	}
	box, err := sealbox.New(sealbox.Key{Version: version, Secret: secret})
	if err != nil {
		panic(err)
	}
	return sealbox.NewKeyring(box)
}

// materialOf returns the key material of a stored key as the service sees it: opened with
// testSealer when sealed, else the clear value.
func materialOf(tb testing.TB, k token.SigningKey) []byte {
	tb.Helper()
	if len(k.Sealed) == 0 {
		return k.Private
	}
	m, err := testSealer.Open(k.Sealed, token.SealAAD(k.ID))
	if err != nil {
		tb.Fatalf("open signing key %s: %v", k.ID, err)
	}
	return m
}

// newService builds a Service of alg on store, failing the test on error.
func newService(tb testing.TB, store token.KeyStore, clk *clock, alg string, mutate ...func(*token.Config)) *token.Service {
	tb.Helper()
	cfg := testConfig(clk, alg)
	for _, m := range mutate {
		m(&cfg)
	}
	svc, err := token.New(context.Background(), store, cfg, nil)
	if err != nil {
		tb.Fatalf("token.New(%s): %v", alg, err)
	}
	return svc
}

func issue(tb testing.TB, svc *token.Service, c token.Claims) string {
	tb.Helper()
	raw, _, err := svc.Issue(context.Background(), c)
	if err != nil {
		tb.Fatalf("Issue: %v", err)
	}
	return raw
}

var someClaims = token.Claims{Subject: "usr_01", Tenant: "ten_01", Roles: []string{"ADMIN"}, Scopes: []string{"agents:read", "agents:write"}}

// requireRejected fails unless err is the one uniform verification error.
func requireRejected(tb testing.TB, err error) {
	tb.Helper()
	if err == nil {
		tb.Fatal("Verify accepted a token it must reject")
	}
	e := errs.As(err)
	if e == nil || e.Code != errs.Unauthenticated || e.Message != "invalid or expired token" || len(e.Fields) != 0 {
		tb.Fatalf("Verify error = %#v, want errs.Unauthenticated %q without fields", err, "invalid or expired token")
	}
}

// segments splits a compact JWS.
func segments(tb testing.TB, raw string) (header, payload map[string]any, parts []string) {
	tb.Helper()
	parts = strings.Split(raw, ".")
	if len(parts) != 3 {
		tb.Fatalf("token has %d segments", len(parts))
	}
	for i, dst := range []*map[string]any{&header, &payload} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			tb.Fatalf("decode segment %d: %v", i, err)
		}
		if err := json.Unmarshal(b, dst); err != nil {
			tb.Fatalf("unmarshal segment %d: %v", i, err)
		}
	}
	return header, payload, parts
}

func kidOf(tb testing.TB, raw string) string {
	tb.Helper()
	h, _, _ := segments(tb, raw)
	kid, _ := h["kid"].(string)
	return kid
}

func b64JSON(tb testing.TB, v any) string {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// validClaims are claims the service accepts at clk's time.
func validClaims(clk *clock) jwt.MapClaims {
	now := clk.Now()
	return jwt.MapClaims{
		"iss":    testIssuer,
		"aud":    []string{testAudience},
		"sub":    "usr_forged",
		"jti":    "01JTI",
		"iat":    now.Unix(),
		"nbf":    now.Unix(),
		"exp":    now.Add(10 * time.Minute).Unix(),
		"roles":  []string{"SUPER_ADMIN"},
		"scope":  "agents:write",
		"tenant": "ten_01",
	}
}

// sign makes a token with method and key; header entries are added to (or, when nil, removed from)
// the library's default header.
func sign(tb testing.TB, method jwt.SigningMethod, key any, header map[string]any, claims jwt.MapClaims) string {
	tb.Helper()
	t := jwt.NewWithClaims(method, claims)
	t.Header["typ"] = token.TokenType
	for k, v := range header {
		if v == nil {
			delete(t.Header, k)
			continue
		}
		t.Header[k] = v
	}
	raw, err := t.SignedString(key)
	if err != nil {
		tb.Fatalf("sign: %v", err)
	}
	return raw
}

// storedSigner returns the signing key the service uses for kid, read from the fake store and
// opened with the test KEK, as an attacker holding both the database and the key file would: it
// lets tests forge claims the service would never issue.
func storedSigner(tb testing.TB, store *fakeStore, kid string) (jwt.SigningMethod, any) {
	tb.Helper()
	for _, k := range store.all() {
		if k.ID != kid {
			continue
		}
		if k.Algorithm == token.AlgHS256 {
			return jwt.SigningMethodHS256, materialOf(tb, k)
		}
		pk, err := x509.ParsePKCS8PrivateKey(materialOf(tb, k))
		if err != nil {
			tb.Fatal(err)
		}
		return jwt.GetSigningMethod(k.Algorithm), pk
	}
	tb.Fatalf("kid %s not in store", kid)
	return nil, nil
}

// newStoredKey makes a stored key of alg with the given identity, as another replica would.
func newStoredKey(tb testing.TB, alg, id string, created time.Time) token.SigningKey {
	tb.Helper()
	var private []byte
	var pk any
	var err error
	switch alg {
	case token.AlgHS256:
		private = make([]byte, 32)
		_, err = rand.Read(private)
	case token.AlgEdDSA:
		_, pk, err = ed25519.GenerateKey(rand.Reader)
	case token.AlgES256:
		pk, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case token.AlgRS256:
		pk, err = rsa.GenerateKey(rand.Reader, 2048)
	}
	if err != nil {
		tb.Fatal(err)
	}
	if pk != nil {
		if private, err = x509.MarshalPKCS8PrivateKey(pk); err != nil {
			tb.Fatal(err)
		}
	}
	return token.SigningKey{ID: id, Algorithm: alg, Private: private, CreatedAt: created.UTC()}
}

func newLogger(buf *syncBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func jwtMethod(alg string) jwt.SigningMethod { return jwt.GetSigningMethod(alg) }

func mustPKCS8(tb testing.TB, der []byte) any {
	tb.Helper()
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func rsaKeyPKCS8(tb testing.TB, bits int) []byte {
	tb.Helper()
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		tb.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		tb.Fatal(err)
	}
	return der
}
