package identity_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/nops-kernel/nops/internal/identity"
	"github.com/nops-kernel/nops/internal/sealbox"
	"github.com/nops-kernel/nops/internal/store/sqlite"
)

// CA.Run is run in goroutines by the tests: goleak makes sure each returns.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testTD = "nops.test"

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now().UTC().Truncate(time.Second)} }

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

// openStore opens a migrated SQLite store in a temporary directory and returns it with the
// directory, whose files tests may inspect.
func openStore(t testing.TB) (*sqlite.Store, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(dir, "nops.db")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if err := s.MigrateUp(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s, dir
}

// newBox returns a sealbox with one random KEK of version.
func newBox(t testing.TB, version string) *sealbox.Box {
	t.Helper()
	secret := make([]byte, sealbox.KeyLen)
	if _, err := rand.Read(secret); err != nil {
		t.Fatal(err)
	}
	b, err := sealbox.New(sealbox.Key{Version: version, Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fixture is a CA over a fresh store, with its clock.
type fixture struct {
	st    *sqlite.Store
	dir   string
	box   *sealbox.Box
	clock *clock
	cfg   identity.Config
	ca    *identity.CA
}

func newFixture(t testing.TB, mutate func(*identity.Config)) *fixture {
	t.Helper()
	st, dir := openStore(t)
	f := &fixture{st: st, dir: dir, box: newBox(t, "k1"), clock: newClock()}
	f.cfg = identity.Config{TrustDomain: testTD, Now: f.clock.Now}
	if mutate != nil {
		mutate(&f.cfg)
	}
	f.ca = f.replica(t)
	return f
}

// replica loads the fixture's CA again, as another kernel sharing the database would.
func (f *fixture) replica(t testing.TB) *identity.CA {
	t.Helper()
	ca, err := identity.LoadOrCreate(context.Background(), f.st, f.box, f.cfg)
	if err != nil {
		t.Fatalf("LoadOrCreate: %v", err)
	}
	return ca
}

// makeCSR returns the DER of a request signed by key with the fields of tmpl.
func makeCSR(t testing.TB, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	if tmpl == nil {
		tmpl = &x509.CertificateRequest{Subject: pkix.Name{CommonName: "agent"}}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatalf("create csr: %v", err)
	}
	return der
}

func csrPEM(der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}
