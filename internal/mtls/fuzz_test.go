package mtls_test

import (
	"crypto/x509"
	"net/url"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/mtls"
)

// FuzzVerify feeds certificates a client could present (parsed by crypto/x509 as the handshake
// does) to Verify: it must not panic, must give every refusal a reason, and must accept only a
// certificate chaining to the CA it trusts — which a mutated certificate never does, its
// signature being broken.
func FuzzVerify(f *testing.F) {
	ca := newCA(f, testTD)
	id := ca.id("tenant", tenantX, "agent", agentA)
	valid := ca.svid(f, id, nil)
	f.Add(valid.Certificates[0].Raw)
	f.Add(ca.svid(f, id, func(c *x509.Certificate) { c.URIs = append(c.URIs, &url.URL{Scheme: "spiffe", Host: "x"}) }).Certificates[0].Raw)
	f.Add(ca.svid(f, id, func(c *x509.Certificate) { c.URIs = []*url.URL{{Scheme: "spiffe", Host: "nops.test", Path: "/a/../b"}} }).Certificates[0].Raw)
	f.Add(ca.root.Raw)
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x01})

	srv, err := mtls.New(mtls.Config{TrustDomain: ca.td}, newSVIDSource(ca.svid(f, ca.id("kernel", "n"), nil)), ca.bundle(), mtls.Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = srv.Close() })
	if err := srv.Revoke(f.Context(), mtls.Revocation{Serial: "1", RevokedAt: time.Now()}); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, der []byte) {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return
		}
		p, err := srv.Verify([]*x509.Certificate{c})
		if err != nil {
			if mtls.ReasonOf(err) == "" {
				t.Fatalf("refusal without a reason: %v", err)
			}
			return
		}
		if string(der) != string(valid.Certificates[0].Raw) || p.ID != id {
			t.Fatalf("accepted a certificate that is not the one issued: %s", p.ID)
		}
	})
}

// FuzzRevocationSerial: Revoke takes serials from operators and the store; whatever it accepts
// must then refuse the certificate with that serial.
func FuzzRevocationSerial(f *testing.F) {
	for _, s := range []string{"1a", "0x1A", "000ff", "", "-1", "+1", "1_0", "0x", "zz", "1a:2b"} {
		f.Add(s)
	}
	ca := newCA(f, testTD)
	f.Fuzz(func(t *testing.T, serial string) {
		srv, err := mtls.New(mtls.Config{TrustDomain: ca.td}, newSVIDSource(ca.svid(t, ca.id("kernel", "n"), nil)), ca.bundle(), mtls.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		if err := srv.Revoke(t.Context(), mtls.Revocation{Serial: serial, RevokedAt: time.Now()}); err != nil {
			return
		}
		n, ok := parseHex(serial)
		if !ok {
			t.Fatalf("Revoke accepted serial %q that is not hexadecimal", serial)
		}
		svid := ca.svid(t, ca.id("tenant", tenantX, "agent", agentA), func(c *x509.Certificate) { c.SerialNumber = n })
		if _, err := srv.Verify(svid.Certificates); mtls.ReasonOf(err) != mtls.ReasonRevoked {
			t.Fatalf("serial %q revoked, certificate with serial %x: %v", serial, n, err)
		}
	})
}
