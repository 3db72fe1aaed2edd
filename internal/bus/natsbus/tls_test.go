package natsbus

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// testPKI is a CA with a server certificate for 127.0.0.1 and a client certificate, as PEM
// files in a temporary directory.
type testPKI struct {
	caFile, certFile, keyFile string // client certificate and key
	pool                      *x509.CertPool
	server                    tls.Certificate
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "nops test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(serial int64, name string, usage x509.ExtKeyUsage) (certPEM, keyPEM []byte) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	}
	p := testPKI{
		caFile: filepath.Join(dir, "ca.pem"), certFile: filepath.Join(dir, "client.pem"), keyFile: filepath.Join(dir, "client-key.pem"),
		pool: x509.NewCertPool(),
	}
	p.pool.AddCert(ca)
	write := func(path string, data []byte) {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(p.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))
	clientCert, clientKey := issue(2, "client", x509.ExtKeyUsageClientAuth)
	write(p.certFile, clientCert)
	write(p.keyFile, clientKey)
	serverCert, serverKey := issue(3, "server", x509.ExtKeyUsageServerAuth)
	if p.server, err = tls.X509KeyPair(serverCert, serverKey); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestExternalMutualTLS: the CA and client certificate options reach the connection; without
// them a server requiring mutual TLS is refused, quickly.
func TestExternalMutualTLS(t *testing.T) {
	pki := newTestPKI(t)
	srv := privateServer(t, server.Options{
		JetStream: true, StoreDir: t.TempDir(),
		TLS: true, TLSVerify: true, TLSTimeout: 2,
		TLSConfig: &tls.Config{
			MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pki.server},
			ClientCAs: pki.pool, ClientAuth: tls.RequireAndVerifyClientCert,
		},
	})
	url := "tls://" + srv.Addr().String()
	b := open(t, Config{URL: url, Namespace: "mtls", TLSCAFile: pki.caFile, TLSCertFile: pki.certFile, TLSKeyFile: pki.keyFile, ConnectTimeout: 5 * time.Second})
	if err := b.Publish(ctxT(t), testMsg("over-mtls")); err != nil {
		t.Fatalf("Publish over mutual TLS: %v", err)
	}

	tests := map[string]struct {
		cfg     Config
		timeout time.Duration
	}{
		// The server hangs up after the handshake: indistinguishable from an outage.
		"no client certificate": {Config{URL: url, Namespace: "mtls", TLSCAFile: pki.caFile}, 2 * time.Second},
		// A certificate verification failure is permanent: no retries.
		"unknown server CA": {Config{URL: url, Namespace: "mtls", TLSCertFile: pki.certFile, TLSKeyFile: pki.keyFile}, 30 * time.Second},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			tt.cfg.ConnectTimeout = tt.timeout
			start := time.Now()
			b, err := Open(context.Background(), tt.cfg, testLogger(t))
			if err == nil {
				b.Close()
				t.Fatal("Open succeeded")
			}
			if d := time.Since(start); d > tt.timeout/2+5*time.Second {
				t.Errorf("Open failed after %s, timeout %s", d, tt.timeout)
			}
			t.Logf("refused after %s: %v", time.Since(start), err)
		})
	}
}
