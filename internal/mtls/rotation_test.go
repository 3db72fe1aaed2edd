package mtls_test

import (
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/nops-kernel/nops/internal/mtls"
)

// TestRotationUnderLoad: 20 clients, half on kept-alive connections (some over HTTP/2), half
// opening a new connection for every request, while the server's SVID is renewed, the clients'
// SVIDs are renewed, and the CA is rotated (bundle with both roots, SVIDs of the new CA, old root
// withdrawn). Not one request may fail.
func TestRotationUnderLoad(t *testing.T) {
	h := newHarness(t, nil)
	id := agentID(h.ca, agentA)
	clientSVID := newSVIDSource(h.ca.svid(t, id, nil))

	var ok, failed atomic.Int64
	var firstErr atomic.Value
	var seenServer, seenClient sync.Map // serials of the SVIDs seen by clients and by the server
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 20 {
		c := h.client(t, clientSVID, clientOpts{keepAlive: i%2 == 0, h2: i%4 == 0})
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				body, resp, err := get(c, h.url+"/")
				if err == nil && body != id.String() {
					err = fmt.Errorf("peer %q", body)
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				seenServer.Store(resp.TLS.PeerCertificates[0].SerialNumber.Text(16), true)
				seenClient.Store(resp.Header.Get("X-Peer-Serial"), true)
				ok.Add(1)
			}
		})
	}
	defer func() { close(stop); wg.Wait() }()

	// step waits until the SVIDs named were seen in use and 200 more requests succeeded.
	step := func(name string, serverSerial, clientSerial string) {
		t.Helper()
		target := ok.Load() + 200
		waitFor(t, name, func() bool {
			_, s := seenServer.Load(serverSerial)
			_, c := seenClient.Load(clientSerial)
			return ok.Load() >= target && (serverSerial == "" || s) && (clientSerial == "" || c)
		})
		if n := failed.Load(); n > 0 {
			t.Fatalf("%s: %d failed requests; first: %v", name, n, firstErr.Load())
		}
	}
	serial := func(c *x509.Certificate) string { return c.SerialNumber.Text(16) }

	step("warm-up", "", "")
	s1 := h.ca.svid(t, h.serverID, nil)
	h.serverSVID.set(s1)
	step("server SVID renewed", serial(s1.Certificates[0]), "")
	c1 := h.ca.svid(t, id, nil)
	clientSVID.set(c1)
	step("client SVIDs renewed", "", serial(c1.Certificates[0]))

	next := newCA(t, testTD).intermediate(t, nil) // the new CA issues from an intermediate
	h.bundles.Add(x509bundle.FromX509Authorities(h.ca.td, []*x509.Certificate{h.ca.root, next.root}))
	step("bundle with both roots", "", "")
	s2 := next.svid(t, h.serverID, nil)
	h.serverSVID.set(s2)
	step("server SVID of the new CA", serial(s2.Certificates[0]), "")
	c2 := next.svid(t, id, nil)
	clientSVID.set(c2)
	step("client SVIDs of the new CA", "", serial(c2.Certificates[0]))
	h.bundles.Add(next.bundle())
	step("old root withdrawn", "", "")

	got := h.handshakes(t)
	if len(got) != 1 || got["accepted"] == 0 {
		t.Errorf("handshakes = %v, want accepted only", got)
	}
	t.Logf("%d requests, %d handshakes, 0 failures", ok.Load(), got["accepted"])
}

// TestClientConfigChecksAgentID: the kernel calling an agent over mTLS accepts only the SPIFFE ID
// of the agent it registered.
func TestClientConfigChecksAgentID(t *testing.T) {
	ca := newCA(t, testTD)
	bundle := ca.bundle()
	kernelID := ca.id("kernel", "node-1")
	kernel := newSVIDSource(ca.svid(t, kernelID, nil))

	// The agent's server: presents agent B's SVID and admits the kernel only.
	agentBID := agentID(ca, agentB)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var sawKernel atomic.Bool
	hs := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			sawKernel.Store(len(r.TLS.PeerCertificates) > 0 && r.TLS.PeerCertificates[0].URIs[0].String() == kernelID.String())
			_, _ = io.WriteString(w, "ok")
		}),
		TLSConfig:         tlsconfig.MTLSServerConfig(newSVIDSource(ca.svid(t, agentBID, nil)), bundle, tlsconfig.AuthorizeID(kernelID)),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          discardLog(),
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = hs.ServeTLS(ln, "", "") }()
	defer func() { _ = hs.Close(); <-served }()
	url := "https://" + ln.Addr().String() + "/"

	call := func(expected string) error {
		cfg := mtls.ClientConfig(kernel, bundle, agentID(ca, expected))
		tr := &http.Transport{TLSClientConfig: cfg}
		defer tr.CloseIdleConnections()
		_, _, err := get(&http.Client{Transport: tr, Timeout: 30 * time.Second}, url)
		return err
	}
	if err := call(agentA); err == nil {
		t.Error("the kernel accepted agent B answering for agent A")
	}
	if sawKernel.Load() {
		t.Error("the request reached the wrong agent")
	}
	if err := call(agentB); err != nil {
		t.Fatalf("the registered agent was refused: %v", err)
	}
	if !sawKernel.Load() {
		t.Error("the agent did not see the kernel's SVID")
	}
}
