package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/kernel"
	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
	"github.com/nops-kernel/nops/internal/spire"
	"github.com/nops-kernel/nops/internal/spire/spiretest"
)

// spireTD is the trust domain of the fake SPIRE deployment: not the kernel's default, so a kernel
// that took its trust domain from anywhere but the Workload API would show it.
const spireTD = "spire.example"

// spireEnv is a fake SPIRE agent (the SPIFFE Workload API, in process) serving a kernel SVID of
// its test CA.
type spireEnv struct {
	ca       *spiretest.CA
	server   *spiretest.Server
	kernelID spiffeid.ID
}

func newSPIREEnv(t *testing.T) *spireEnv {
	t.Helper()
	ca := spiretest.NewCA(t, spireTD)
	e := &spireEnv{ca: ca, kernelID: ca.ID(t, "kernel", "node-1")}
	e.server = spiretest.Start(t, ca.IssueSVID(t, e.kernelID, time.Hour), ca.Bundle())
	return e
}

// config points a kernel at the fake, as NOPS_SPIFFE_ENDPOINT_SOCKET does, leaving the trust
// domain to the SVID.
func (e *spireEnv) config(c *config.Config) {
	c.Identity.SPIFFEEndpointSocket = e.server.Addr()
	c.Identity.TrustDomain = ""
}

// spireBundle fetches a kernel's /v1/identity/bundle as a SPIFFE bundle of the fake's trust domain.
func spireBundle(t *testing.T, k *kerneltest.Kernel, headers ...string) (*http.Response, *spiffebundle.Bundle) {
	t.Helper()
	resp, body := k.Do(t, "GET", "/v1/identity/bundle", nil, headers...)
	if resp.StatusCode != http.StatusOK {
		return resp, nil
	}
	b, err := spiffebundle.Parse(spiffeid.RequireTrustDomainFromString(spireTD), body)
	if err != nil {
		t.Fatalf("the bundle is not a SPIFFE bundle of %s: %v\n%s", spireTD, err, body)
	}
	return resp, b
}

// A kernel on SPIRE takes its trust domain and SVID from the Workload API, has no built-in CA, and
// serves the Workload API's bundle; a bundle the Workload API pushes later (a new root) is served
// without a restart.
func TestSPIREKernelServesTheWorkloadAPIsBundle(t *testing.T) {
	e := newSPIREEnv(t)
	k := kerneltest.Start(t, e.config)
	if k.CA() != nil {
		t.Error("the kernel created or loaded the built-in CA in SPIRE mode")
	}
	if got := k.Workload().TrustDomain().Name(); got != spireTD {
		t.Errorf("trust domain %q, want the SVID's %q", got, spireTD)
	}
	if svid, err := k.Workload().GetX509SVID(); err != nil || svid.ID != e.kernelID {
		t.Errorf("the kernel's SVID is %v (%v), want the Workload API's %s", svid, err, e.kernelID)
	}

	resp, b := spireBundle(t, k)
	if b == nil {
		t.Fatalf("GET /v1/identity/bundle: %d", resp.StatusCode)
	}
	if !b.X509Bundle().Equal(e.ca.Bundle()) {
		t.Fatal("the kernel's bundle is not the Workload API's")
	}
	etag := resp.Header.Get("ETag")
	if r, _ := k.Do(t, "GET", "/v1/identity/bundle", nil, "If-None-Match: "+etag); r.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match with the current tag: %d, want 304", r.StatusCode)
	}

	newRoot := e.ca.AddRoot(t)
	e.server.SetBundle(e.ca.Bundle())
	kerneltest.WaitFor(t, 30*time.Second, "the pushed bundle to be served", func() bool {
		_, b := spireBundle(t, k)
		return b != nil && b.HasX509Authority(newRoot) && len(b.X509Authorities()) == 2
	})
	if r, _ := k.Do(t, "GET", "/v1/identity/bundle", nil, "If-None-Match: "+etag); r.StatusCode != http.StatusOK {
		t.Errorf("If-None-Match with the old tag after a bundle change: %d, want 200", r.StatusCode)
	}
}

// POST /v1/identity/svid answers 409 on SPIRE: the kernel is no CA, agents get SVIDs from their own
// SPIRE agent. Nothing is issued, so nothing is audited as issued.
func TestSPIREKernelRefusesToIssueSVIDs(t *testing.T) {
	e := newSPIREEnv(t)
	f := newFixture(t, e.config)
	resp, body := f.k.Do(t, "POST", "/v1/agents", agentSpec("alpha"), f.keys["ADMIN"])
	mustStatus(t, resp, body, http.StatusCreated)
	agent := decode[agentDoc](t, body).ID
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	resp, body = f.k.Do(t, "POST", "/v1/identity/svid", map[string]any{"csr": csr, "agent_id": agent}, f.keys["ADMIN"])
	mustStatus(t, resp, body, http.StatusConflict)
	problem := decode[struct {
		Detail string `json:"detail"`
	}](t, body)
	if problem.Detail != spire.SignRefusal {
		t.Errorf("problem detail %q, want %q", problem.Detail, spire.SignRefusal)
	}
	if n := countAudit(t, f.k, f.keys["ADMIN"], "identity.svid.issue", "agents/"+agent); n != 0 {
		t.Errorf("%d audit records of an issuance that did not happen", n)
	}
}

// newKernel builds (and closes) a kernel the way kerneltest does, returning New's error.
func newKernel(t *testing.T, mutate func(*config.Config)) error {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.Auth.BootstrapAdminPassword = kerneltest.AdminPassword
	mutate(&cfg)
	k, err := kernel.New(context.Background(), cfg, kernel.Options{Logger: slog.New(slog.DiscardHandler), Out: &kerneltest.Buffer{}})
	if err == nil {
		_ = k.Close()
	}
	return err
}

// A configured trust domain other than the SVID's is refused at start, naming both.
func TestSPIREKernelRefusesAnotherTrustDomain(t *testing.T) {
	e := newSPIREEnv(t)
	err := newKernel(t, func(c *config.Config) {
		e.config(c)
		c.Identity.TrustDomain = "nops.local"
	})
	if err == nil {
		t.Fatal("a kernel configured for nops.local started on an SVID of " + spireTD)
	}
	for _, want := range []string{"identity.trust_domain", `"nops.local"`, `"` + spireTD + `"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	// The same trust domain, spelled out, is accepted.
	if err := newKernel(t, func(c *config.Config) { e.config(c); c.Identity.TrustDomain = spireTD }); err != nil {
		t.Errorf("a kernel configured with the SVID's trust domain: %v", err)
	}
}

// A kernel whose Workload API does not answer gives up after identity.spiffe_start_timeout, naming
// the setting and the address.
func TestSPIREKernelFailsClearlyWithoutAWorkloadAPI(t *testing.T) {
	addr := "unix://" + filepath.Join(t.TempDir(), "agent.sock")
	err := newKernel(t, func(c *config.Config) {
		c.Identity.SPIFFEEndpointSocket = addr
		c.Identity.SPIFFEStartTimeout = config.Duration(time.Second)
	})
	if err == nil {
		t.Fatal("a kernel started without its Workload API")
	}
	for _, want := range []string{"identity.spiffe_endpoint_socket", "NOPS_SPIFFE_ENDPOINT_SOCKET", addr} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

// spireMTLSClient is an HTTPS client presenting svid that accepts only a server presenting serverID
// under bundle, and records the server's leaf of each connection.
func spireMTLSClient(t *testing.T, svid *x509svid.SVID, bundle *x509bundle.Bundle, serverID spiffeid.ID, seen *[]*x509.Certificate) *http.Client {
	t.Helper()
	tc := tlsconfig.MTLSClientConfig(svid, bundle, tlsconfig.AuthorizeID(serverID))
	tc.MinVersion = tls.VersionTLS13
	if seen != nil {
		tc.VerifyConnection = func(cs tls.ConnectionState) error {
			*seen = append(*seen, cs.PeerCertificates[0])
			return nil
		}
	}
	tr := &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// On the mTLS listener a kernel on SPIRE presents its SPIRE SVID (and the renewal the Workload API
// pushes, from the next connection on) and accepts clients whose SVIDs chain to the Workload API's
// bundle — and only those.
func TestSPIREKernelMTLS(t *testing.T) {
	e := newSPIREEnv(t)
	f := newFixture(t, e.config, func(c *config.Config) { c.HTTP.MTLSAddr = "127.0.0.1:0" })
	resp, body := f.k.Do(t, "POST", "/v1/agents", agentSpec("alpha"), f.keys["ADMIN"])
	mustStatus(t, resp, body, http.StatusCreated)
	agent := decode[agentDoc](t, body).ID
	agentID := e.ca.ID(t, "tenant", f.tenant, "agent", agent)
	url := "https://" + f.k.MTLSAddr() + "/v1/auth/whoami"

	var seen []*x509.Certificate
	client := spireMTLSClient(t, e.ca.IssueSVID(t, agentID, time.Hour), e.ca.Bundle(), e.kernelID, &seen)
	get := func(c *http.Client) (int, string, error) {
		r, err := c.Get(url)
		if err != nil {
			return 0, "", err
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		return r.StatusCode, string(b), nil
	}
	status, body2, err := get(client)
	if err != nil {
		t.Fatalf("an agent with an SVID of the Workload API's CA: %v", err)
	}
	if status != http.StatusOK || !strings.Contains(body2, agent) {
		t.Fatalf("whoami over mTLS: %d %s, want 200 naming %s", status, body2, agent)
	}
	kernelSVID, err := f.k.Workload().GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != 1 || !seen[0].Equal(kernelSVID.Certificates[0]) {
		t.Fatal("the kernel did not present its SVID from the Workload API")
	}

	// An SVID of the same trust domain from a CA the Workload API does not vouch for is refused.
	other := spiretest.NewCA(t, spireTD)
	if _, _, err := get(spireMTLSClient(t, other.IssueSVID(t, agentID, time.Hour), e.ca.Bundle(), e.kernelID, nil)); err == nil {
		t.Error("an SVID of a CA outside the Workload API's bundle was accepted")
	}

	// The Workload API renews the kernel's SVID: new connections get the new one, no restart.
	renewed := e.ca.IssueSVID(t, e.kernelID, time.Hour)
	e.server.SetSVID(renewed)
	kerneltest.WaitFor(t, 30*time.Second, "the renewed kernel SVID on new connections", func() bool {
		if _, _, err := get(client); err != nil {
			t.Fatalf("whoami over mTLS after the renewal: %v", err)
		}
		return seen[len(seen)-1].Equal(renewed.Certificates[0])
	})
}
