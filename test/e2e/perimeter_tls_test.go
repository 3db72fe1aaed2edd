package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
)

// httpsClient returns a client of the kernel's HTTPS listener with tc (certificate checks off:
// the tests look at what the server negotiates, not at a CA).
func httpsClient(t *testing.T, tc *tls.Config) *http.Client {
	t.Helper()
	tc.InsecureSkipVerify = true //nolint:gosec // test client of a self-signed listener
	tr := &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: kerneltest.NewContractTransport(t, tr), Timeout: 10 * time.Second}
}

// The development certificate serves HTTPS with TLS 1.3 and TLS 1.2 AEAD suites only, refuses
// TLS 1.1 and CBC suites, and sends HSTS on HTTPS responses.
func TestTLSDevCert(t *testing.T) {
	k := kerneltest.Start(t, func(c *config.Config) { c.HTTP.TLS.DevCert = true })
	url := "https://" + k.Addr() + "/health"
	refused := []struct {
		name string
		tc   *tls.Config
	}{
		{"TLS 1.1", &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}}, //nolint:gosec // refusal under test
		{"TLS 1.2 CBC suites", &tls.Config{MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{ //nolint:gosec // refusal under test
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
			tls.TLS_RSA_WITH_AES_128_CBC_SHA, tls.TLS_RSA_WITH_AES_128_GCM_SHA256}}},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := httpsClient(t, tt.tc).Get(url)
			if err == nil {
				resp.Body.Close()
				t.Fatalf("handshake succeeded: %s", tls.VersionName(resp.TLS.Version))
			}
		})
	}
	accepted := []struct {
		name    string
		tc      *tls.Config
		version uint16
	}{
		{"TLS 1.2 AEAD", &tls.Config{MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256}}, tls.VersionTLS12},
		{"TLS 1.3", &tls.Config{MinVersion: tls.VersionTLS13}, tls.VersionTLS13},
	}
	for _, tt := range accepted {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := httpsClient(t, tt.tc).Get(url)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || resp.TLS == nil || resp.TLS.Version != tt.version {
				t.Fatalf("status %d, TLS %+v", resp.StatusCode, resp.TLS)
			}
			if hsts := resp.Header.Get("Strict-Transport-Security"); !strings.HasPrefix(hsts, "max-age=") {
				t.Errorf("Strict-Transport-Security %q on an HTTPS response", hsts)
			}
		})
	}
}

// writeCert writes a fresh self-signed ECDSA certificate for 127.0.0.1 with serial to certFile
// and keyFile, each replaced atomically (rename).
func writeCert(t *testing.T, certFile, keyFile string, serial int64) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "nops e2e"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"localhost"}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		path string
		blk  *pem.Block
	}{{keyFile, &pem.Block{Type: "PRIVATE KEY", Bytes: kder}}, {certFile, &pem.Block{Type: "CERTIFICATE", Bytes: der}}} {
		tmp := f.path + ".tmp"
		if err := os.WriteFile(tmp, pem.EncodeToMemory(f.blk), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, f.path); err != nil {
			t.Fatal(err)
		}
	}
}

// Certificate files replaced on disk are served to new handshakes without a restart, and a
// connection opened before keeps working.
func TestTLSCertificateHotReload(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writeCert(t, certFile, keyFile, 1)
	k := kerneltest.Start(t, func(c *config.Config) {
		c.HTTP.TLS.CertFile, c.HTTP.TLS.KeyFile = certFile, keyFile
		c.HTTP.TLS.ReloadInterval = config.Duration(50 * time.Millisecond)
	})
	url := "https://" + k.Addr() + "/health"
	serial := func(c *http.Client) int64 {
		resp, err := c.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
		return resp.TLS.PeerCertificates[0].SerialNumber.Int64()
	}
	old := httpsClient(t, &tls.Config{MinVersion: tls.VersionTLS12})
	if s := serial(old); s != 1 {
		t.Fatalf("serial %d, want 1", s)
	}
	writeCert(t, certFile, keyFile, 2)
	kerneltest.WaitFor(t, 10*time.Second, "new handshakes get the new certificate", func() bool {
		fresh := httpsClient(t, &tls.Config{MinVersion: tls.VersionTLS12})
		return serial(fresh) == 2
	})
	if s := serial(old); s != 1 {
		t.Errorf("the connection opened before the reload was replaced (serial %d)", s)
	}
}
