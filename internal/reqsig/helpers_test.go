package reqsig_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/principal"
	"github.com/nops-kernel/nops/internal/registry"
	"github.com/nops-kernel/nops/internal/reqsig"
	"github.com/nops-kernel/nops/internal/sealbox"
	"github.com/nops-kernel/nops/internal/store/sqlite"
	"github.com/nops-kernel/nops/internal/tenant"
	"github.com/nops-kernel/nops/internal/user"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// t0 is the instant the tests sign at, unless they move the clock.
var t0 = time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)

// clock is a settable clock shared by the Keys and the Verifier of a test.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock(at time.Time) *clock { return &clock{now: at} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Set(at time.Time) {
	c.mu.Lock()
	c.now = at
	c.mu.Unlock()
}

// keyStore is what a test needs of a SQL store: the request keys and what they reference.
type keyStore interface {
	reqsig.Store
	reqsig.NonceStore
	CreateTenant(ctx context.Context, t tenant.Tenant) error
	CreateAgent(ctx context.Context, a registry.Agent) error
}

// openSQLite opens a migrated SQLite store at path (a new file in a temporary directory when
// ""), closed when the test ends.
func openSQLite(t testing.TB, path string) *sqlite.Store {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "nops.db")
	}
	s, err := sqlite.Open(context.Background(), sqlite.Config{Path: path}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if err := s.MigrateUp(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

// seed creates tenants ten_a and ten_b, and agent agt_a of ten_a.
func seed(t testing.TB, s keyStore) {
	t.Helper()
	ctx := context.Background()
	for _, id := range []string{"ten_a", "ten_b"} {
		if err := s.CreateTenant(ctx, tenant.Tenant{ID: id, Name: id, DisplayName: id, Status: tenant.StatusActive,
			CreatedAt: t0, UpdatedAt: t0, Version: 1}); err != nil {
			t.Fatal(err)
		}
	}
	a := registry.Agent{ID: "agt_a", TenantID: "ten_a", Name: "a", Version: "1.0.0", Capabilities: []registry.Capability{},
		Endpoint: "https://a.example/", Labels: map[string]string{}, Metadata: map[string]any{},
		Criticality: registry.CriticalityBestEffort, Status: registry.StatusHealthy,
		HeartbeatAt: t0, CreatedAt: t0, UpdatedAt: t0, Revision: 1}
	if err := s.CreateAgent(ctx, a); err != nil {
		t.Fatal(err)
	}
}

func testBox(t testing.TB) *sealbox.Box {
	t.Helper()
	b, err := sealbox.New(sealbox.Key{Version: "k1", Secret: bytes.Repeat([]byte{7}, sealbox.KeyLen)})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newKeys(t testing.TB, s reqsig.Store, c *clock, opts reqsig.KeysOptions) *reqsig.Keys {
	t.Helper()
	opts.Now = c.Now
	k, err := reqsig.NewKeys(s, testBox(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// adminOf is a context of an ADMIN of tenantID.
func adminOf(tenantID string) context.Context {
	return principal.NewContext(context.Background(), principal.Principal{Subject: "usr_" + tenantID, Tenant: tenantID, Roles: []string{user.RoleAdmin}})
}

// superAdmin is a context of the SUPER_ADMIN.
func superAdmin() context.Context {
	return principal.NewContext(context.Background(), principal.Principal{Subject: "usr_root", Roles: []string{user.RoleSuperAdmin}})
}

// createHMAC creates an hmac-sha256 key of ten_a (bound to agentID unless "") and returns it
// with its signer key.
func createHMAC(t testing.TB, keys *reqsig.Keys, agentID string) (reqsig.Key, reqsig.SignerKey) {
	t.Helper()
	k, secret, err := keys.Create(adminOf("ten_a"), reqsig.CreateInput{AgentID: agentID, Name: "hmac", Alg: reqsig.AlgHMACSHA256})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := reqsig.DecodeSecret(secret)
	if err != nil {
		t.Fatal(err)
	}
	return k, reqsig.SignerKey{ID: k.ID, Alg: reqsig.AlgHMACSHA256, Secret: raw}
}

// createEd25519 creates an ed25519 key of ten_a from a generated key pair.
func createEd25519(t testing.TB, keys *reqsig.Keys) (reqsig.Key, reqsig.SignerKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, secret, err := keys.Create(adminOf("ten_a"), reqsig.CreateInput{Name: "ed", Alg: reqsig.AlgEd25519, PublicKey: pub})
	if err != nil {
		t.Fatal(err)
	}
	if secret != "" {
		t.Fatalf("Create of an ed25519 key returned a secret")
	}
	return k, reqsig.SignerKey{ID: k.ID, Alg: reqsig.AlgEd25519, PrivateKey: priv}
}

func newVerifier(t testing.TB, keys reqsig.KeyLookup, nonces reqsig.NonceStore, c *clock, cfg reqsig.Config) *reqsig.Verifier {
	t.Helper()
	cfg.Now = c.Now
	v, err := reqsig.NewVerifier(keys, nonces, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// request is a client request before signing.
type request struct {
	method, url, contentType string
	body                     []byte
}

var (
	postJSON = request{http.MethodPost, "http://api.example.com/v1/invoke/echo?mode=fast&x=1", "application/json", []byte(`{"hello":"world"}`)}
	getPlain = request{http.MethodGet, "http://api.example.com/v1/agents?limit=10", "", nil}
)

// sign builds req as a client would, signs it with key at now with nonce ("" for a random one),
// and returns it as the server receives it (written to the wire and read back) with its body.
func sign(t testing.TB, req request, key reqsig.SignerKey, now time.Time, nonce string) (*http.Request, []byte) {
	t.Helper()
	r, err := http.NewRequest(req.method, req.url, bytes.NewReader(req.body))
	if err != nil {
		t.Fatal(err)
	}
	if req.contentType != "" {
		r.Header.Set("Content-Type", req.contentType)
	}
	if err := reqsig.Sign(r, req.body, key, now, nonce); err != nil {
		t.Fatalf("Sign: %v", err)
	}
	return received(t, r)
}

// received writes a client request to the wire and reads it back as a server would.
func received(t testing.TB, r *http.Request) (*http.Request, []byte) {
	t.Helper()
	var wire bytes.Buffer
	if err := r.Write(&wire); err != nil {
		t.Fatal(err)
	}
	sr, err := http.ReadRequest(bufio.NewReader(&wire))
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(sr.Body)
	if err != nil {
		t.Fatal(err)
	}
	sr.Body = io.NopCloser(bytes.NewReader(body))
	return sr, body
}

// wantRefusal checks that err is a refusal with code and a message containing msg, and that
// the message quotes none of secrets (expected signatures, digests).
func wantRefusal(t testing.TB, err error, code, msg string, secrets ...string) {
	t.Helper()
	e := errs.As(err)
	if e == nil || e.Code != errs.Unauthenticated {
		t.Fatalf("error %v, want an unauthenticated refusal %q", err, msg)
	}
	if got := reqsig.RefusalCode(err); got != code {
		t.Errorf("refusal code %q (%v), want %q", got, err, code)
	}
	if !strings.Contains(e.Message, msg) {
		t.Errorf("refusal message %q, want it to contain %q", e.Message, msg)
	}
	for _, s := range secrets {
		if s != "" && strings.Contains(e.Error(), s) {
			t.Errorf("refusal %q reveals %q", e.Error(), s)
		}
	}
}

func mustEd25519(t testing.TB) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}
