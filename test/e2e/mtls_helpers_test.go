package e2e

import (
	"bufio"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/identity"
	"github.com/nops-kernel/nops/internal/kernel"
	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
	"github.com/nops-kernel/nops/internal/sealbox"
)

// mtlsRefresh is how often the test kernels read the revocation list: shorter than the default
// (2s) so that tests waiting for a revocation made on another replica finish sooner.
const mtlsRefresh = 500 * time.Millisecond

// withMTLS turns the mTLS listener on.
func withMTLS(c *config.Config) {
	c.HTTP.MTLSAddr = "127.0.0.1:0"
	c.Identity.RevocationRefreshInterval = config.Duration(mtlsRefresh)
}

// mtlsFixture is a kernel with its mTLS listener on, a tenant with ADMIN, OPERATOR and VIEWER
// keys, and the trust bundle a workload would fetch.
type mtlsFixture struct {
	*fixture
	td       spiffeid.TrustDomain
	bundle   *spiffebundle.Bundle
	kernelID spiffeid.ID // the SPIFFE ID the listener must present
}

func newMTLSFixture(t *testing.T, mutate ...func(*config.Config)) *mtlsFixture {
	t.Helper()
	f := newFixture(t, append([]func(*config.Config){withMTLS}, mutate...)...)
	if f.k.MTLSAddr() == "" {
		t.Fatal("the mTLS listener is not running")
	}
	return mtlsFixtureOf(t, f)
}

func mtlsFixtureOf(t *testing.T, f *fixture) *mtlsFixture {
	t.Helper()
	b, _, _ := bundleOf(t, f.k)
	sv, err := f.k.Workload().GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	return &mtlsFixture{fixture: f, td: b.TrustDomain(), bundle: b, kernelID: sv.ID}
}

// svid is a client certificate chain (leaf first) and its key, valid or not.
type svid struct {
	certs []*x509.Certificate
	key   crypto.Signer
}

func (s svid) serial() string { return s.certs[0].SerialNumber.Text(16) }

func (s svid) tlsCert() *tls.Certificate {
	c := &tls.Certificate{PrivateKey: s.key, Leaf: s.certs[0]}
	for _, x := range s.certs {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c
}

func p256Key(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func csrPEM(t *testing.T, key crypto.Signer) string {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func parseChain(t *testing.T, text string) []*x509.Certificate {
	t.Helper()
	var chain []*x509.Certificate
	for rest := []byte(text); ; {
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
	if len(chain) == 0 {
		t.Fatalf("no certificate in %q", text)
	}
	return chain
}

// svidResponse is the answer of POST /v1/identity/svid.
type svidResponse struct {
	SPIFFEID  string    `json:"spiffe_id"`
	SVIDChain string    `json:"svid_chain"`
	Serial    string    `json:"serial"`
	ExpiresAt time.Time `json:"expires_at"`
}

// enrolled is an agent with an agent-bound API key and an SVID issued through the API with it.
type enrolled struct {
	agent string
	key   string // "X-API-Key: …" of the agent's key
	id    spiffeid.ID
	svid  svid
}

// enroll registers an agent, gives it an API key bound to it and has it ask for its SVID with
// that key, as an agent does at its first start.
func (m *mtlsFixture) enroll(t *testing.T, name string) enrolled {
	t.Helper()
	agent := newAgent(t, m.k, m.keys["ADMIN"], name, map[string]string{"env": "prod"}, "")
	_, key := newKey(t, m.k, m.keys["ADMIN"], "", "OPERATOR", map[string]any{"agent_id": agent, "name": name + "-key"})
	priv := p256Key(t)
	resp, body := m.k.Do(t, "POST", "/v1/identity/svid", map[string]any{"csr": csrPEM(t, priv)}, key)
	mustStatus(t, resp, body, http.StatusOK)
	out := decode[svidResponse](t, body)
	id := spiffeid.RequireFromString(out.SPIFFEID)
	if want := "spiffe://" + m.td.Name() + "/tenant/" + m.tenant + "/agent/" + agent; id.String() != want {
		t.Fatalf("issued %s, want %s", id, want)
	}
	return enrolled{agent: agent, key: key, id: id, svid: svid{certs: parseChain(t, out.SVIDChain), key: priv}}
}

// mtlsClient talks to a kernel's mTLS listener presenting cert (none when nil). It verifies the
// server as the kernel's SPIFFE ID against the trust bundle, as a workload does, and checks every
// exchange against the API contract.
type mtlsClient struct {
	base   string
	http   *http.Client
	tlsCfg *tls.Config
}

func (m *mtlsFixture) client(t *testing.T, cert *tls.Certificate) *mtlsClient {
	t.Helper()
	return mtlsClientFor(t, m.k, m.bundle, m.kernelID, cert)
}

func mtlsClientFor(t *testing.T, k *kerneltest.Kernel, bundle *spiffebundle.Bundle, kernelID spiffeid.ID, cert *tls.Certificate) *mtlsClient {
	t.Helper()
	cfg := tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeID(kernelID))
	cfg.MinVersion = tls.VersionTLS13
	if cert != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	tr := &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &mtlsClient{
		base:   "https://" + k.MTLSAddr(),
		http:   &http.Client{Transport: kerneltest.NewContractTransport(t, tr), Timeout: 30 * time.Second},
		tlsCfg: cfg,
	}
}

// try sends a request and returns the response with its body, or the transport error (a refused
// certificate surfaces as one: the TLS alert).
func (c *mtlsClient) try(t *testing.T, method, path string, body any, headers ...string) (*http.Response, []byte, error) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = strings.NewReader(mustJSON(t, body))
	}
	req, err := http.NewRequestWithContext(context.Background(), method, c.base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for _, h := range headers {
		name, value, _ := strings.Cut(h, ":")
		req.Header.Set(strings.TrimSpace(name), strings.TrimSpace(value))
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, err
	}
	return resp, b, nil
}

// do is try for requests that must reach the API.
func (c *mtlsClient) do(t *testing.T, method, path string, body any, headers ...string) (*http.Response, []byte) {
	t.Helper()
	resp, b, err := c.try(t, method, path, body, headers...)
	if err != nil {
		t.Fatalf("%s %s over mTLS: %v", method, path, err)
	}
	return resp, b
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	switch b := v.(type) {
	case string:
		return b
	case []byte:
		return string(b)
	}
	js, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(js)
}

// refusals is the count of mTLS handshakes the kernel refused for reason.
func refusals(t *testing.T, k *kerneltest.Kernel, reason string) float64 {
	t.Helper()
	return metricValue(t, k, "nops_mtls_handshakes_total", `result="refused"`, `reason="`+reason+`"`)
}

// wantRefused sends a request presenting cert and checks that the handshake is refused for
// reason: the client gets the TLS alert and no response, the kernel counts and logs the refusal.
func (m *mtlsFixture) wantRefused(t *testing.T, cert *tls.Certificate, reason string) {
	t.Helper()
	before := refusals(t, m.k, reason)
	resp, body, err := m.client(t, cert).try(t, "GET", "/v1/auth/whoami", nil)
	if err == nil {
		t.Fatalf("a client certificate that must be refused (%s) got %d: %s", reason, resp.StatusCode, body)
	}
	if !strings.Contains(err.Error(), "tls") {
		t.Errorf("the refusal reached the client as %v, want a TLS alert", err)
	}
	if after := refusals(t, m.k, reason); after != before+1 {
		t.Fatalf("nops_mtls_handshakes_total{result=refused,reason=%s} went from %v to %v, want one more", reason, before, after)
	}
	if !strings.Contains(m.k.Logs.String(), `"reason":"`+reason+`"`) {
		t.Errorf("no log line with reason %s", reason)
	}
}

// issuer signs certificates with the kernel's own CA: the intermediate that issues its SVIDs,
// whose key the test opens from the store with the key-encryption key, as a replica does. It
// forges certificates the API would never issue (bad validity, two URI SANs) that still chain
// to the kernel's bundle, so that each refusal has exactly one cause.
type issuer struct {
	cert  *x509.Certificate
	key   crypto.Signer
	chain []*x509.Certificate // sent after the leaf
}

func kernelIssuer(t *testing.T, k *kerneltest.Kernel) issuer {
	t.Helper()
	ctx := context.Background()
	sv, err := k.Workload().GetX509SVID()
	if err != nil || len(sv.Certificates) < 2 {
		t.Fatalf("the kernel's SVID %v: %v", sv, err)
	}
	inter := sv.Certificates[1]
	st, err := kernel.OpenStore(ctx, k.Config, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	_, auths, err := st.CAAuthorities(ctx, k.Config.Identity.TrustDomain)
	if err != nil {
		t.Fatal(err)
	}
	box, err := sealbox.LoadOrCreateFile(k.Config.KEKPath())
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range auths {
		if string(a.CertDER) != string(inter.Raw) {
			continue
		}
		der, err := box.Open(a.SealedKey, identity.SealAAD(a.ID))
		if err != nil {
			t.Fatal(err)
		}
		key, err := x509.ParsePKCS8PrivateKey(der)
		if err != nil {
			t.Fatal(err)
		}
		return issuer{cert: inter, key: key.(crypto.Signer), chain: []*x509.Certificate{inter}}
	}
	t.Fatal("the intermediate of the kernel's SVID is not among the stored authorities")
	return issuer{}
}

// leafTemplate is an X509-SVID template for uris, valid from a minute ago for an hour.
func leafTemplate(t *testing.T, uris ...string) *x509.Certificate {
	t.Helper()
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial.Add(serial, big.NewInt(1)),
		Subject:               pkix.Name{Organization: []string{"nops e2e"}},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, u := range uris {
		parsed, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, parsed)
	}
	return tmpl
}

// sign issues tmpl with a fresh key; the chain is the leaf and the issuer.
func (is issuer) sign(t *testing.T, tmpl *x509.Certificate) svid {
	t.Helper()
	key := p256Key(t)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, is.cert, &key.PublicKey, is.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return svid{certs: append([]*x509.Certificate{leaf}, is.chain...), key: key}
}

// otherCA is a CA of the same trust domain that the kernel has never heard of.
func otherCA(t *testing.T, td spiffeid.TrustDomain) issuer {
	t.Helper()
	key := p256Key(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(7),
		Subject:               pkix.Name{CommonName: "impostor root " + td.Name()},
		URIs:                  []*url.URL{td.ID().URL()},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	root, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return issuer{cert: root, key: key}
}

// keptConn is one HTTP/1.1 connection to the mTLS listener kept open between requests, the way
// a long-lived agent holds one.
type keptConn struct {
	conn *tls.Conn
	br   *bufio.Reader
	host string
}

func (c *mtlsClient) dial(t *testing.T) *keptConn {
	t.Helper()
	addr := strings.TrimPrefix(c.base, "https://")
	d := &tls.Dialer{Config: c.tlsCfg.Clone()}
	conn, err := d.DialContext(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatalf("dial the mTLS listener: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &keptConn{conn: conn.(*tls.Conn), br: bufio.NewReader(conn), host: addr}
}

// heartbeat sends the agent's heartbeat on the connection and returns the status.
func (c *keptConn) heartbeat(t *testing.T, agent string) int {
	t.Helper()
	if err := c.conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	_, err := fmt.Fprintf(c.conn, "POST /v1/agents/%s/heartbeat HTTP/1.1\r\nHost: %s\r\nContent-Length: 0\r\n\r\n", agent, c.host)
	if err != nil {
		t.Fatalf("write a heartbeat: %v", err)
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		t.Fatalf("read the heartbeat's response: %v", err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatal(err)
	}
	if resp.Close {
		t.Fatal("the server asked to close a kept-alive connection")
	}
	return resp.StatusCode
}

// waitClosed blocks until the server closes the connection (at most timeout) and returns how
// long that took.
func (c *keptConn) waitClosed(t *testing.T, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	if err := c.conn.SetReadDeadline(start.Add(timeout)); err != nil {
		t.Fatal(err)
	}
	_, err := c.br.ReadByte()
	if err == nil {
		t.Fatal("the server sent bytes nobody asked for")
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the connection is still open after %s", timeout)
	}
	return time.Since(start)
}
