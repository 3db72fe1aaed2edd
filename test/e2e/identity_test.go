package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/kernel"
	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

// bundleOf fetches a kernel's trust bundle (no credential) with its ETag.
func bundleOf(t *testing.T, k *kerneltest.Kernel) (*spiffebundle.Bundle, string, []byte) {
	t.Helper()
	resp, body := k.Do(t, "GET", "/v1/identity/bundle", nil)
	mustStatus(t, resp, body, http.StatusOK)
	b, err := spiffebundle.Parse(spiffeid.RequireTrustDomainFromString(k.Config.Identity.TrustDomain), body)
	if err != nil {
		t.Fatalf("the bundle is not a SPIFFE bundle: %v\n%s", err, body)
	}
	return b, resp.Header.Get("ETag"), body
}

// Two replicas sharing PostgreSQL and the key-encryption key serve one CA: the same bundle, and
// an SVID one issues verifies against the other's bundle. A replica with another key file
// refuses to start, saying why.
func TestIdentityAcrossReplicas(t *testing.T) {
	dbURL := services.Postgres(t)
	secrets := t.TempDir()
	shared := func(c *config.Config) {
		c.Database.URL = dbURL
		c.Signing.KEKFile, c.APIKeys.PepperFile = filepath.Join(secrets, "kek.json"), filepath.Join(secrets, "pepper.json")
	}
	f := newFixture(t, shared)
	b := kerneltest.Start(t, shared)
	bundleA, etagA, bodyA := bundleOf(t, f.k)
	_, etagB, bodyB := bundleOf(t, b)
	if string(bodyA) != string(bodyB) || etagA != etagB || etagA == "" {
		t.Fatalf("the replicas serve different bundles:\n%s (%s)\n%s (%s)", bodyA, etagA, bodyB, etagB)
	}

	resp, body := f.k.Do(t, "POST", "/v1/agents", agentSpec("alpha"), f.keys["ADMIN"])
	mustStatus(t, resp, body, http.StatusCreated)
	agent := decode[agentDoc](t, body).ID
	_, agentKey := newKey(t, f.k, f.keys["ADMIN"], "", "OPERATOR", map[string]any{"agent_id": agent, "name": "alpha-key"})
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{"alpha.internal"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	resp, body = b.Do(t, "POST", "/v1/identity/svid", map[string]any{"csr": csr}, agentKey)
	mustStatus(t, resp, body, http.StatusOK)
	svid := decode[struct {
		SPIFFEID  string `json:"spiffe_id"`
		SVIDChain string `json:"svid_chain"`
		Serial    string `json:"serial"`
	}](t, body)
	want := "spiffe://" + f.k.Config.Identity.TrustDomain + "/tenant/" + f.tenant + "/agent/" + agent
	if svid.SPIFFEID != want {
		t.Fatalf("spiffe_id %s, want %s", svid.SPIFFEID, want)
	}
	var chain []*x509.Certificate
	for rest := []byte(svid.SVIDChain); ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, c)
	}
	if id, _, err := x509svid.Verify(chain, bundleA); err != nil || id.String() != want {
		t.Fatalf("an SVID of replica B verifies against replica A's bundle as %v (%v), want %s", id, err, want)
	}
	if n := countAudit(t, f.k, f.keys["ADMIN"], "identity.svid.issue", "agents/"+agent); n != 1 {
		t.Fatalf("%d audit records of the issuance, want 1", n)
	}

	cfg := b.Config
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.Signing.KEKFile = filepath.Join(t.TempDir(), "other-kek.json")
	k, err := kernel.New(context.Background(), cfg, kernel.Options{Logger: slog.New(slog.DiscardHandler), Out: &kerneltest.Buffer{}})
	if err == nil {
		_ = k.Close()
		t.Fatal("a replica with another key-encryption key started")
	}
	if !strings.Contains(err.Error(), "key-encryption key") {
		t.Fatalf("start with another key file: %v, want it to name the key-encryption key", err)
	}
}

// The CA is created once and kept: a restarted kernel serves the same bundle.
func TestIdentityCASurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	same := func(c *config.Config) { c.DataDir = dir }
	var first []byte
	t.Run("first start", func(t *testing.T) { _, _, first = bundleOf(t, kerneltest.Start(t, same)) })
	t.Run("restart", func(t *testing.T) {
		if _, _, again := bundleOf(t, kerneltest.Start(t, same)); string(again) != string(first) {
			t.Fatalf("the bundle changed across a restart:\n%s\n%s", first, again)
		}
	})
}
