package main

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
)

// TestIdentityIssueCLI has an ADMIN issue an SVID for an agent of its tenant: the key is made
// here and written 0600 next to the chain, which verifies against the bundle as the agent.
func TestIdentityIssueCLI(t *testing.T) {
	k := kerneltest.Start(t)
	dir := t.TempDir()
	admin := "Bearer " + k.Token(t, "")
	resp, body := k.Do(t, "POST", "/v1/tenants", map[string]any{"name": "acme"}, "Authorization: "+admin)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create tenant: %d %s", resp.StatusCode, body)
	}
	tenantID := fromJSON[idName](t, string(body)).ID
	resp, body = k.Do(t, "POST", "/v1/api-keys?tenant="+tenantID, map[string]any{"name": "ops", "role": "ADMIN"}, "Authorization: "+admin)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create key: %d %s", resp.StatusCode, body)
	}
	adminKey := fromJSON[struct {
		Secret string `json:"secret"`
	}](t, string(body)).Secret
	resp, body = k.Do(t, "POST", "/v1/agents", map[string]any{"name": "a", "version": "1.0.0", "endpoint": "https://a.example/run"}, "X-API-Key: "+adminKey)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("register agent: %d %s", resp.StatusCode, body)
	}
	agentID := fromJSON[agentOut](t, string(body)).ID
	env := map[string]string{"NOPS_SERVER": k.URL, "NOPS_API_KEY": adminKey}
	want := "spiffe://" + k.Config.Identity.TrustDomain + "/tenant/" + tenantID + "/agent/" + agentID

	keyFile, certFile, bundleFile := filepath.Join(dir, "agent.key"), filepath.Join(dir, "agent.crt"), filepath.Join(dir, "bundle.pem")
	out, _ := ok(t, env, "identity", "issue", "--agent", agentID, "--key-out", keyFile, "--cert-out", certFile, "--bundle-out", bundleFile, "--ttl", "10m")
	if !regexp.MustCompile(`(?m)^SPIFFE ID\s+`+regexp.QuoteMeta(want)+`$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^SERIAL\s+[0-9a-f]+$`).MatchString(out) || strings.Contains(out, "PRIVATE KEY") {
		t.Fatalf("identity issue:\n%s", out)
	}
	for _, p := range []string{keyFile, certFile, bundleFile} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %04o, want 0600", filepath.Base(p), fi.Mode().Perm())
		}
	}
	// go-spiffe loads the pair (the key matches the leaf) and verifies it against the bundle.
	svid, err := x509svid.Load(certFile, keyFile)
	if err != nil {
		t.Fatalf("x509svid.Load: %v", err)
	}
	td := spiffeid.RequireTrustDomainFromString(k.Config.Identity.TrustDomain)
	roots, err := x509bundle.Load(td, bundleFile)
	if err != nil {
		t.Fatal(err)
	}
	if got, _, err := x509svid.Verify(svid.Certificates, roots); err != nil || got.String() != want {
		t.Fatalf("the SVID verifies as %v (%v), want %s", got, err, want)
	}
	if life := svid.Certificates[0].NotAfter.Sub(svid.Certificates[0].NotBefore); life > 11*time.Minute {
		t.Errorf("--ttl 10m gave a lifetime of %v", life)
	}

	// Another key type, JSON output.
	out, _ = ok(t, env, "identity", "issue", "--agent", agentID, "--key-out", keyFile, "--cert-out", certFile, "--key-type", "ed25519", "-o", "json")
	if doc := fromJSON[svidDoc](t, out); doc.SPIFFEID != want || doc.Serial == "" {
		t.Fatalf("identity issue -o json: %s", out)
	}
	raw, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(raw)
	if pk, err := x509.ParsePKCS8PrivateKey(block.Bytes); err != nil {
		t.Fatal(err)
	} else if _, isEd := pk.(ed25519.PrivateKey); !isEd {
		t.Fatalf("--key-type ed25519 wrote a %T", pk)
	}

	// Refusals: an agent of no tenant of the caller, missing files, a bad key type. Nothing is written.
	other := filepath.Join(dir, "other.key")
	_, errOut := fails(t, env, "identity", "issue", "--agent", "agt_01jz0000000000000000000000", "--key-out", other, "--cert-out", filepath.Join(dir, "other.crt"))
	if !strings.Contains(errOut, "Not Found") {
		t.Errorf("unknown agent: %q", errOut)
	}
	if _, err := os.Stat(other); !os.IsNotExist(err) {
		t.Errorf("a refused issuance wrote the key file (%v)", err)
	}
	fails(t, env, "identity", "issue", "--agent", agentID, "--cert-out", certFile)
	fails(t, env, "identity", "issue", "--agent", agentID, "--key-out", other, "--cert-out", certFile, "--key-type", "rsa512")

	// The bundle needs no credential.
	out, _ = ok(t, map[string]string{"NOPS_SERVER": k.URL}, "identity", "bundle")
	if _, err := spiffebundle.Parse(td, []byte(out)); err != nil {
		t.Fatalf("identity bundle is not a SPIFFE bundle: %v\n%s", err, out)
	}
	out, _ = ok(t, map[string]string{"NOPS_SERVER": k.URL}, "identity", "bundle", "--format", "pem")
	bundlePEM, _ := os.ReadFile(bundleFile)
	if out != string(bundlePEM) {
		t.Fatalf("identity bundle --format pem:\n%s\nwant the issued bundle:\n%s", out, bundlePEM)
	}
}
