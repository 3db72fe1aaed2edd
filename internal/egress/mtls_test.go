package egress_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/nops-kernel/nops/internal/egress"
	"github.com/nops-kernel/nops/internal/identity"
	"github.com/nops-kernel/nops/internal/sealbox"
	"github.com/nops-kernel/nops/internal/store/sqlite"
)

const (
	mtlsTD     = "egress.test"
	mtlsTenant = "ten_01jzzzzzzzzzzzzzzzzzzzzzza"
	agentA     = "agt_01jzzzzzzzzzzzzzzzzzzzzzza"
	agentB     = "agt_01jzzzzzzzzzzzzzzzzzzzzzzb"
)

// newCA returns a real built-in CA of trust domain td over a fresh SQLite store.
func newCA(t *testing.T, td string) *identity.CA {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(t.TempDir(), "nops.db")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	if err := st.MigrateUp(ctx); err != nil {
		t.Fatal(err)
	}
	secret := make([]byte, sealbox.KeyLen)
	if _, err := rand.Read(secret); err != nil {
		t.Fatal(err)
	}
	box, err := sealbox.New(sealbox.Key{Version: "k1", Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	ca, err := identity.LoadOrCreate(ctx, st, box, identity.Config{TrustDomain: td})
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// issue has ca sign an SVID for id over a CSR, as POST /v1/identity/svid does for an agent.
func issue(t *testing.T, ca *identity.CA, id spiffeid.ID) *x509svid.SVID {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "agent"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ca.Sign(csr, id, 0)
	if err != nil {
		t.Fatal(err)
	}
	return &x509svid.SVID{ID: s.ID, Certificates: s.Certificates, PrivateKey: key}
}

func agentSVID(t *testing.T, ca *identity.CA, agent string) *x509svid.SVID {
	t.Helper()
	id, err := identity.AgentID(ca.TrustDomain(), mtlsTenant, agent)
	if err != nil {
		t.Fatal(err)
	}
	return issue(t, ca, id)
}

func tlsCert(s *x509svid.SVID) *tls.Certificate {
	c := &tls.Certificate{PrivateKey: s.PrivateKey, Leaf: s.Certificates[0]}
	for _, cert := range s.Certificates {
		c.Certificate = append(c.Certificate, cert.Raw)
	}
	return c
}

// agentServer is an https agent on 127.0.0.1:0 that requires a client SVID of its trust bundle
// (clientCA's) and presents the SVID in cert, which a test may swap.
type agentServer struct {
	*httptest.Server
	cert  atomic.Pointer[tls.Certificate]
	hits  atomic.Int64
	mu    sync.Mutex
	peers []string // SPIFFE IDs of the clients served, one per request
	conns map[string]bool
}

func newAgentServer(t *testing.T, clientCA *identity.CA, presents *x509svid.SVID, h2 bool) *agentServer {
	t.Helper()
	s := &agentServer{conns: map[string]bool{}}
	s.cert.Store(tlsCert(presents))
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		id, err := x509svid.IDFromCert(r.TLS.PeerCertificates[0])
		s.mu.Lock()
		if err == nil {
			s.peers = append(s.peers, id.String())
		}
		s.mu.Unlock()
		_, _ = io.WriteString(w, "ok "+r.Proto)
	}))
	s.Server.EnableHTTP2 = h2
	s.Server.Config.ConnState = func(c net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.mu.Lock()
			s.conns[c.RemoteAddr().String()] = true
			s.mu.Unlock()
		}
	}
	// The agent verifies the client against the kernel's bundle: any SVID of its trust domain.
	conf := tlsconfig.MTLSServerConfig(nil, clientCA, tlsconfig.AuthorizeMemberOf(clientCA.TrustDomain()))
	conf.GetCertificate = nil
	conf.MinVersion = tls.VersionTLS13
	conf.NextProtos = []string{"http/1.1"}
	if h2 {
		conf.NextProtos = []string{"h2", "http/1.1"}
	}
	// Each handshake takes the certificate of the moment (StartTLS would otherwise add
	// httptest's own certificate, which wins over GetCertificate without SNI).
	s.Server.TLS = &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := conf.Clone()
		c.Certificates = []tls.Certificate{*s.cert.Load()}
		return c, nil
	}}
	s.Server.StartTLS()
	t.Cleanup(s.Close)
	return s
}

func (s *agentServer) connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func (s *agentServer) peerIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.peers...)
}

// kernel is the calling side: its CA, its own SVID source and the agent transport over it.
type kernel struct {
	ca   *identity.CA
	ks   *identity.KernelSource
	tr   *egress.AgentTransport
	c    *http.Client
	read *sdkmetric.ManualReader
}

func newKernel(t *testing.T, ca *identity.CA, p egress.Policy) *kernel {
	t.Helper()
	ks, err := identity.NewKernelSource(ca, "k1", nil)
	if err != nil {
		t.Fatal(err)
	}
	read := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(read))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	tr, err := egress.NewAgentTransport(p, ks, egress.AgentTransportOptions{Meter: mp.Meter("test")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &kernel{ca: ca, ks: ks, tr: tr, c: egress.Client(tr), read: read}
}

// call POSTs to url for agent (none when agent is ""), returning the body of a success.
func (k *kernel) call(t *testing.T, url, agent string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if agent != "" {
		ctx = egress.WithAgent(ctx, mtlsTenant, agent)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/invoke/x", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := k.c.Do(req)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d %q", resp.StatusCode, body)
	}
	return string(body), nil
}

// handshakes returns nops_egress_mtls_handshakes_total by "result/reason".
func (k *kernel) handshakes(t *testing.T) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := k.read.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "nops_egress_mtls_handshakes_total" {
				continue
			}
			for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
				r, _ := dp.Attributes.Value("result")
				why, _ := dp.Attributes.Value("reason")
				out[r.AsString()+"/"+why.AsString()] += dp.Value
			}
		}
	}
	return out
}

func wantRefused(t *testing.T, err error, reason string) *egress.TLSRefusedError {
	t.Helper()
	if err == nil {
		t.Fatalf("call succeeded, want a refusal (%s)", reason)
	}
	re, ok := egress.IsTLSRefused(err)
	if !ok {
		t.Fatalf("error %v, want a *TLSRefusedError", err)
	}
	if re.Reason != reason {
		t.Fatalf("reason %q (%v), want %q", re.Reason, err, reason)
	}
	return re
}

func TestAgentTransportCallsTheRightAgentOverMTLS(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(map[bool]string{false: "http1", true: "h2"}[h2], func(t *testing.T) {
			ca := newCA(t, mtlsTD)
			k := newKernel(t, ca, loopbackPolicy)
			srv := newAgentServer(t, ca, agentSVID(t, ca, agentA), h2)

			body, err := k.call(t, srv.URL, agentA)
			if err != nil {
				t.Fatalf("call: %v", err)
			}
			wantProto := map[bool]string{false: "HTTP/1.1", true: "HTTP/2.0"}[h2]
			if body != "ok "+wantProto {
				t.Fatalf("body %q, want %q", body, "ok "+wantProto)
			}
			// The agent saw the kernel's SVID: the kernel presents one.
			kid, _ := identity.KernelID(ca.TrustDomain(), "k1")
			if got := srv.peerIDs(); len(got) != 1 || got[0] != kid.String() {
				t.Fatalf("agent saw client %v, want %s", got, kid)
			}
			if got := k.handshakes(t); got["accepted/"] != 1 {
				t.Fatalf("handshakes %v, want 1 accepted", got)
			}
		})
	}
}

func TestAgentTransportRefusesAnotherAgentsSVID(t *testing.T) {
	ca := newCA(t, mtlsTD)
	k := newKernel(t, ca, loopbackPolicy)
	srv := newAgentServer(t, ca, agentSVID(t, ca, agentB), false) // B's SVID, called as A

	_, err := k.call(t, srv.URL, agentA)
	re := wantRefused(t, err, egress.TLSReasonWrongID)
	wantA, _ := identity.AgentID(ca.TrustDomain(), mtlsTenant, agentA)
	wantB, _ := identity.AgentID(ca.TrustDomain(), mtlsTenant, agentB)
	if re.Expected != wantA.String() || re.Presented != wantB.String() {
		t.Fatalf("refusal %+v, want expected %s presented %s", re, wantA, wantB)
	}
	if !strings.Contains(err.Error(), wantB.String()) {
		t.Errorf("error %q does not name the presented ID", err)
	}
	if n := srv.hits.Load(); n != 0 {
		t.Fatalf("the impostor received %d requests", n)
	}
	if got := k.handshakes(t); got["refused/wrong_spiffe_id"] != 1 || got["accepted/"] != 0 {
		t.Fatalf("handshakes %v, want 1 refused/wrong_spiffe_id", got)
	}
}

func TestAgentTransportRefusesAnotherCA(t *testing.T) {
	ca := newCA(t, mtlsTD)
	k := newKernel(t, ca, loopbackPolicy)

	t.Run("same trust domain, another CA", func(t *testing.T) {
		other := newCA(t, mtlsTD)
		// The impostor trusts the kernel (it only wants to be called) but its SVID, for the
		// right SPIFFE ID, chains to a root the kernel does not know.
		srv := newAgentServer(t, ca, agentSVID(t, other, agentA), false)
		_, err := k.call(t, srv.URL, agentA)
		wantRefused(t, err, egress.TLSReasonUnknownAuthority)
		if n := srv.hits.Load(); n != 0 {
			t.Fatalf("the impostor received %d requests", n)
		}
	})
	t.Run("foreign trust domain", func(t *testing.T) {
		other := newCA(t, "other.test")
		srv := newAgentServer(t, ca, agentSVID(t, other, agentA), false)
		_, err := k.call(t, srv.URL, agentA)
		wantRefused(t, err, egress.TLSReasonForeignTrustDomain)
		if n := srv.hits.Load(); n != 0 {
			t.Fatalf("the impostor received %d requests", n)
		}
	})
}

// TestAgentRequiringAClientCertificate: an agent that requires a client SVID of the kernel's
// trust domain accepts the kernel (TestAgentTransportCallsTheRightAgentOverMTLS) and refuses a
// client without a certificate, so the kernel does present one; an agent that trusts another CA
// refuses the kernel's certificate, which the kernel reports as refused_by_agent.
func TestAgentRequiringAClientCertificate(t *testing.T) {
	ca := newCA(t, mtlsTD)
	k := newKernel(t, ca, loopbackPolicy)
	srv := newAgentServer(t, ca, agentSVID(t, ca, agentA), false)

	// A TLS client without a certificate is refused by the agent.
	anon := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}}}
	defer anon.CloseIdleConnections()
	resp, err := anon.Post(srv.URL+"/invoke/x", "application/json", strings.NewReader("{}"))
	if err == nil {
		_ = resp.Body.Close()
		t.Fatalf("a client without a certificate got %d", resp.StatusCode)
	}
	if _, err := k.call(t, srv.URL, agentA); err != nil {
		t.Fatalf("the kernel, which presents its SVID: %v", err)
	}

	other := newCA(t, mtlsTD)
	strict := newAgentServer(t, other, agentSVID(t, ca, agentA), false) // trusts only other's clients
	_, err = k.call(t, strict.URL, agentA)
	wantRefused(t, err, egress.TLSReasonRefusedByAgent)
	if n := strict.hits.Load(); n != 0 {
		t.Fatalf("the agent served %d requests of a client it refused", n)
	}
	if got := k.handshakes(t); got["refused/refused_by_agent"] != 1 {
		t.Fatalf("handshakes %v, want 1 refused/refused_by_agent", got)
	}
}

// TestAgentsOnOneHostPortNeverShareAConnection: agents A and B behind one host:port. A
// connection verified for A is kept alive; a call for B must not ride it.
func TestAgentsOnOneHostPortNeverShareAConnection(t *testing.T) {
	ca := newCA(t, mtlsTD)
	k := newKernel(t, ca, loopbackPolicy)
	svidA, svidB := agentSVID(t, ca, agentA), agentSVID(t, ca, agentB)
	srv := newAgentServer(t, ca, svidA, false)

	if _, err := k.call(t, srv.URL, agentA); err != nil {
		t.Fatalf("call A: %v", err)
	}
	// With one pool per host:port this call would reuse A's idle connection and succeed.
	_, err := k.call(t, srv.URL, agentB)
	wantRefused(t, err, egress.TLSReasonWrongID)
	if n := srv.hits.Load(); n != 1 {
		t.Fatalf("server served %d requests, want 1 (A's)", n)
	}

	srv.cert.Store(tlsCert(svidB)) // the host:port now presents B on new connections
	if _, err := k.call(t, srv.URL, agentB); err != nil {
		t.Fatalf("call B: %v", err)
	}
	if _, err := k.call(t, srv.URL, agentA); err != nil {
		t.Fatalf("call A again (its own kept-alive connection): %v", err)
	}
	// A's connection, B's refused one, B's: three connections; A's second call reused its own.
	if n := srv.connections(); n != 3 {
		t.Fatalf("server saw %d connections, want 3", n)
	}
	if n := k.tr.Agents(); n != 2 {
		t.Fatalf("%d per-agent transports, want 2", n)
	}
}

func TestAgentTransportDialCheckAppliesToHTTPS(t *testing.T) {
	ca := newCA(t, mtlsTD)
	k := newKernel(t, ca, defaultPolicy) // loopback not allowed
	srv := newAgentServer(t, ca, agentSVID(t, ca, agentA), false)

	_, err := k.call(t, srv.URL, agentA)
	be, ok := egress.IsBlocked(err)
	if !ok || be.Reason != egress.ReasonLoopback {
		t.Fatalf("error %v, want a loopback BlockedError", err)
	}
	if n := srv.connections(); n != 0 {
		t.Fatalf("server saw %d connections, want none", n)
	}
}

func TestAgentTransportPlainHTTPAndMissingAgent(t *testing.T) {
	ca := newCA(t, mtlsTD)
	k := newKernel(t, ca, loopbackPolicy)

	plain := newCountingServer(t, nil)
	if body, err := k.call(t, plain.URL, ""); err != nil || body != "ok" {
		t.Fatalf("http call: %q %v", body, err)
	}

	srv := newAgentServer(t, ca, agentSVID(t, ca, agentA), false)
	_, err := k.call(t, srv.URL, "")
	if err == nil || !strings.Contains(err.Error(), "egress.WithAgent") {
		t.Fatalf("https call without an agent: %v, want a refusal naming WithAgent", err)
	}
	if n := srv.connections(); n != 0 {
		t.Fatalf("server saw %d connections, want none", n)
	}
}

func TestWithAgent(t *testing.T) {
	if _, _, ok := egress.AgentFromContext(context.Background()); ok {
		t.Fatal("agent in an empty context")
	}
	ten, agt, ok := egress.AgentFromContext(egress.WithAgent(context.Background(), "t", "a"))
	if !ok || ten != "t" || agt != "a" {
		t.Fatalf("got %q %q %v", ten, agt, ok)
	}
}

func TestNewAgentTransportNeedsAnIdentity(t *testing.T) {
	if _, err := egress.NewAgentTransport(loopbackPolicy, nil, egress.AgentTransportOptions{}); err == nil {
		t.Fatal("no error without an identity source")
	}
}
