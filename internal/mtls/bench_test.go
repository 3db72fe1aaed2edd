package mtls_test

import (
	"crypto/tls"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
)

// Benchmarks of the mTLS listener against plain TLS 1.3 in the same run: the same server SVID
// (ECDSA P-256), the same handler, the same net/http server; the baseline asks for no client
// certificate. Compare the ratio, not the absolute numbers.
//
//	go test -run '^$' -bench . -benchtime 2s ./internal/mtls

// okHandler is the handler of both servers.
var okHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })

// plainTLS serves okHandler over TLS without client certificates, with the harness's server SVID.
func plainTLS(b *testing.B, h *harness) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	hs := &http.Server{
		Handler:           okHandler,
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS13, GetCertificate: tlsconfig.GetCertificate(h.serverSVID)},
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          discardLog(),
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = hs.ServeTLS(ln, "", "") }()
	b.Cleanup(func() { _ = hs.Close(); <-served })
	return "https://" + ln.Addr().String() + "/"
}

func benchClients(b *testing.B, keepAlive bool) (h *harness, mtlsClient, tlsClient *http.Client, mtlsURL, tlsURL string) {
	h = newHarness(b, func(c *harnessConfig) { c.handler = okHandler })
	id := agentID(h.ca, agentA)
	mtlsClient = h.client(b, newSVIDSource(h.ca.svid(b, id, nil)), clientOpts{keepAlive: keepAlive})
	tlsClient = h.client(b, nil, clientOpts{keepAlive: keepAlive})
	return h, mtlsClient, tlsClient, h.url + "/", plainTLS(b, h)
}

func benchGet(b *testing.B, c *http.Client, url string) {
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := get(c, url); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHandshake: one new connection (full TLS 1.3 handshake) per request.
func BenchmarkHandshake(b *testing.B) {
	_, mc, tc, mu, tu := benchClients(b, false)
	b.Run("tls", func(b *testing.B) { benchGet(b, tc, tu) })
	b.Run("mtls", func(b *testing.B) { benchGet(b, mc, mu) })
}

// BenchmarkKeepAlive: requests on a kept-alive connection, the steady-state cost.
func BenchmarkKeepAlive(b *testing.B) {
	_, mc, tc, mu, tu := benchClients(b, true)
	b.Run("tls", func(b *testing.B) { benchGet(b, tc, tu) })
	b.Run("mtls", func(b *testing.B) { benchGet(b, mc, mu) })
}
