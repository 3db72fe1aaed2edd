package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
)

// mtlsAgent is an https agent on 127.0.0.1:0 the way an agent author would run one: it verifies
// clients against the bundle of GET /v1/identity/bundle, accepts only kernels of the trust domain,
// and presents the certificate set with present (an SVID issued through POST /v1/identity/svid).
type mtlsAgent struct {
	*httptest.Server
	cert  atomic.Pointer[tls.Certificate]
	hits  atomic.Int64
	mu    sync.Mutex
	peers []string
}

func newMTLSAgent(t *testing.T, k *kerneltest.Kernel) *mtlsAgent {
	t.Helper()
	bundle, _, _ := bundleOf(t, k)
	a := &mtlsAgent{}
	a.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.hits.Add(1)
		id, _ := x509svid.IDFromCert(r.TLS.PeerCertificates[0])
		a.mu.Lock()
		a.peers = append(a.peers, id.String())
		a.mu.Unlock()
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, `{"echo":%s}`, body)
	}))
	kernels := tlsconfig.AdaptMatcher(func(id spiffeid.ID) error {
		if !id.MemberOf(bundle.TrustDomain()) || !strings.HasPrefix(id.Path(), "/kernel/") {
			return fmt.Errorf("%s is not a kernel of %s", id, bundle.TrustDomain())
		}
		return nil
	})
	conf := tlsconfig.MTLSServerConfig(nil, bundle, kernels)
	conf.GetCertificate = nil
	conf.NextProtos = []string{"http/1.1"}
	// Each handshake takes the certificate of the moment (StartTLS would otherwise add
	// httptest's own certificate, which wins over GetCertificate without SNI).
	a.Server.TLS = &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := conf.Clone()
		c.Certificates = []tls.Certificate{*a.cert.Load()}
		return c, nil
	}}
	t.Cleanup(a.Close)
	return a
}

// endpoint is the agent's https URL, known before it starts (its listener is open).
func (a *mtlsAgent) endpoint() string { return "https://" + a.Listener.Addr().String() }

func (a *mtlsAgent) present(svid *tls.Certificate) {
	a.cert.Store(svid)
	if a.URL == "" {
		a.StartTLS()
	}
}

// issueAgentSVID has the kernel issue an SVID for agentID with a CSR authenticated by an API key
// bound to the agent, as an agent does at start.
func issueAgentSVID(t *testing.T, f *fixture, agentID string) (*tls.Certificate, string) {
	t.Helper()
	_, agentKey := newKey(t, f.k, f.keys["ADMIN"], "", "OPERATOR", map[string]any{"agent_id": agentID, "name": "key-" + agentID})
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	resp, body := f.k.Do(t, "POST", "/v1/identity/svid", map[string]any{"csr": csr}, agentKey)
	mustStatus(t, resp, body, http.StatusOK)
	out := decode[struct {
		SPIFFEID  string `json:"spiffe_id"`
		SVIDChain string `json:"svid_chain"`
	}](t, body)
	cert := &tls.Certificate{PrivateKey: key}
	for rest := []byte(out.SVIDChain); ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		cert.Certificate = append(cert.Certificate, blk.Bytes)
	}
	if len(cert.Certificate) == 0 {
		t.Fatalf("no certificate in %s", body)
	}
	return cert, out.SPIFFEID
}

// A kernel calls an https agent over mTLS: it presents its own SVID, which the agent verifies
// with the published bundle, and accepts the agent only when it presents the SVID of the agent
// registered at that endpoint. An agent presenting another agent's SVID is never sent the call:
// 502 naming the refusal.
func TestInvokeHTTPSAgentOverMTLS(t *testing.T) {
	f := newFixture(t)
	k, admin := f.k, f.keys["ADMIN"]

	good := newMTLSAgent(t, k)
	goodID := invokeAgent(t, k, admin, "secure", good.endpoint(), "text.secure", nil)
	goodCert, goodSPIFFE := issueAgentSVID(t, f, goodID)
	good.present(goodCert)

	resp, body := k.Do(t, "POST", "/v1/invoke/text.secure", map[string]string{"text": "hi"}, admin)
	mustStatus(t, resp, body, http.StatusOK)
	if string(body) != `{"echo":{"text":"hi"}}` || resp.Header.Get("Nops-Agent-Id") != goodID {
		t.Fatalf("answer %s, agent %s", body, resp.Header.Get("Nops-Agent-Id"))
	}
	good.mu.Lock()
	peers := append([]string(nil), good.peers...)
	good.mu.Unlock()
	wantKernel := "spiffe://" + k.Config.Identity.TrustDomain + "/kernel/"
	if len(peers) != 1 || !strings.HasPrefix(peers[0], wantKernel) {
		t.Fatalf("the agent saw clients %v, want one kernel SVID (%s…)", peers, wantKernel)
	}

	// An impostor at another endpoint, registered as another agent, presents the SVID of the
	// first one: a valid SVID of the trust domain, of the wrong agent.
	impostor := newMTLSAgent(t, k)
	impostorID := invokeAgent(t, k, admin, "impostor", impostor.endpoint(), "text.impostor", nil)
	impostor.present(goodCert)
	resp, body = k.Do(t, "POST", "/v1/invoke/text.impostor", map[string]string{"text": "secret"}, admin)
	p := wantProblem(t, resp, body, http.StatusBadGateway, "bad_gateway", "mTLS handshake refused (wrong_spiffe_id)")
	if n := impostor.hits.Load(); n != 0 {
		t.Fatalf("the impostor was sent %d requests", n)
	}
	// The log line of the 502 names both identities for the operator.
	wantImpostor := "spiffe://" + k.Config.Identity.TrustDomain + "/tenant/" + f.tenant + "/agent/" + impostorID
	logs := k.Logs.String()
	found := false
	for line := range strings.SplitSeq(logs, "\n") {
		if strings.Contains(line, p.RequestID) && strings.Contains(line, wantImpostor) && strings.Contains(line, goodSPIFFE) {
			found = true
		}
	}
	if !found {
		t.Errorf("no log line of request %s naming %s and %s", p.RequestID, wantImpostor, goodSPIFFE)
	}
	if v := metricValue(t, k, "nops_egress_mtls_handshakes_total", `result="refused"`, `reason="wrong_spiffe_id"`); v != 1 {
		t.Errorf("refused handshakes %v, want 1", v)
	}
	if v := metricValue(t, k, "nops_egress_mtls_handshakes_total", `result="accepted"`); v != 1 {
		t.Errorf("accepted handshakes %v, want 1", v)
	}
}

// Endpoints the egress policy always refuses are refused at registration, naming the field.
func TestRegisterRefusesABlockedEndpoint(t *testing.T) {
	f := newFixture(t)
	for _, endpoint := range []string{"http://169.254.169.254/", "https://[fe80::1]:8443/", "http://[::ffff:169.254.169.254]/latest"} {
		spec := agentSpec("meta")
		spec["endpoint"] = endpoint
		resp, body := f.k.Do(t, "POST", "/v1/agents", spec, f.keys["ADMIN"])
		p := wantProblem(t, resp, body, http.StatusBadRequest, "invalid", "")
		if len(p.Errors) != 1 || p.Errors[0].Name != "body.endpoint" || !strings.Contains(p.Errors[0].Reason, "refused") {
			t.Errorf("%s: problem fields %+v, want body.endpoint refused", endpoint, p.Errors)
		}
	}
	// An update to such an endpoint is refused too.
	resp, body := f.k.Do(t, "POST", "/v1/agents", agentSpec("fine"), f.keys["ADMIN"])
	mustStatus(t, resp, body, http.StatusCreated)
	spec := agentSpec("fine")
	spec["endpoint"] = "http://169.254.169.254/"
	resp, body = f.k.Do(t, "PUT", "/v1/agents/"+decode[agentDoc](t, body).ID, spec, f.keys["ADMIN"], "If-Match: "+resp.Header.Get("ETag"))
	p := wantProblem(t, resp, body, http.StatusBadRequest, "invalid", "")
	if len(p.Errors) != 1 || p.Errors[0].Name != "body.endpoint" {
		t.Errorf("update: problem fields %+v, want body.endpoint", p.Errors)
	}
}
