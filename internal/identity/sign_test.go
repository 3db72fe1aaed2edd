package identity_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"math/big"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/identity"
)

// keys are generated once: RSA generation is slow under the race detector.
var keys = sync.OnceValue(func() map[string]crypto.Signer {
	m := map[string]crypto.Signer{}
	m["p256"], _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	m["p384"], _ = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	m["p521"], _ = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	_, m["ed25519"], _ = ed25519.GenerateKey(rand.Reader)
	m["rsa2048"], _ = rsa.GenerateKey(rand.Reader, 2048)
	m["rsa1024"], _ = rsa.GenerateKey(rand.Reader, 1024)
	return m
})

func agentID(t *testing.T, ca *identity.CA) spiffeid.ID {
	t.Helper()
	id, err := identity.AgentID(ca.TrustDomain(), "ten_a", "agt_a")
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// wantCSRRefusal fails unless err is an errs.Invalid naming body.csr with a reason containing want.
func wantCSRRefusal(t *testing.T, err error, want string) {
	t.Helper()
	e := errs.As(err)
	if e == nil || e.Code != errs.Invalid || len(e.Fields) != 1 || e.Fields[0].Name != "body.csr" {
		t.Fatalf("error %v, want an invalid input naming body.csr", err)
	}
	if !strings.Contains(e.Fields[0].Reason, want) {
		t.Fatalf("reason %q does not say %q", e.Fields[0].Reason, want)
	}
}

func TestSignKeyTypes(t *testing.T) {
	f := newFixture(t, nil)
	id := agentID(t, f.ca)
	for _, tc := range []struct {
		key    string
		refuse string // "" when accepted
		usage  x509.KeyUsage
	}{
		{"p256", "", x509.KeyUsageDigitalSignature},
		{"p384", "", x509.KeyUsageDigitalSignature},
		{"ed25519", "", x509.KeyUsageDigitalSignature},
		{"rsa2048", "", x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment},
		{"rsa1024", "RSA key of 1024 bits", 0},
		{"p521", "unsupported ECDSA curve", 0},
	} {
		t.Run(tc.key, func(t *testing.T) {
			svid, err := f.ca.Sign(makeCSR(t, keys()[tc.key], nil), id, 0)
			if tc.refuse != "" {
				wantCSRRefusal(t, err, tc.refuse)
				return
			}
			if err != nil {
				t.Fatalf("Sign: %v", err)
			}
			if got := svid.Certificates[0].KeyUsage; got != tc.usage {
				t.Errorf("key usage %b, want %b", got, tc.usage)
			}
			if _, _, err := x509svid.Verify(svid.Certificates, f.ca.Bundle(), x509svid.WithTime(f.clock.Now())); err != nil {
				t.Errorf("the SVID does not verify against the bundle: %v", err)
			}
		})
	}
}

func TestSignRefusesACSRWhoseSignatureDoesNotVerify(t *testing.T) {
	f := newFixture(t, nil)
	for _, name := range []string{"p256", "ed25519", "rsa2048"} {
		t.Run(name, func(t *testing.T) {
			der := makeCSR(t, keys()[name], nil)
			csr, err := x509.ParseCertificateRequest(der)
			if err != nil {
				t.Fatal(err)
			}
			// Flip a bit of the signature, which is the DER's last bytes.
			bad := append([]byte(nil), der...)
			bad[len(bad)-len(csr.Signature)/2] ^= 0x01
			_, err = f.ca.Sign(bad, agentID(t, f.ca), 0)
			wantCSRRefusal(t, err, "signature does not verify")
		})
	}
	t.Run("not a CSR", func(t *testing.T) {
		_, err := f.ca.Sign([]byte("\x30\x03\x02\x01\x01"), agentID(t, f.ca), 0)
		wantCSRRefusal(t, err, "PKCS #10")
	})
}

// The SPIFFE ID is the one Sign is given: the names a CSR asks for are never copied.
func TestSignIgnoresTheNamesOfTheCSR(t *testing.T) {
	f := newFixture(t, nil)
	id := agentID(t, f.ca)
	other, _ := url.Parse("spiffe://" + testTD + "/tenant/ten_b/agent/agt_admin")
	foreign, _ := url.Parse("spiffe://evil.example/tenant/ten_a/agent/agt_a")
	web, _ := url.Parse("https://example.com/")
	for _, tc := range []struct {
		name string
		tmpl *x509.CertificateRequest
	}{
		{"another agent's SPIFFE ID", &x509.CertificateRequest{URIs: []*url.URL{other}}},
		{"several URI SANs", &x509.CertificateRequest{URIs: []*url.URL{other, foreign, web}}},
		{"DNS, IP and e-mail SANs", &x509.CertificateRequest{DNSNames: []string{"kernel.internal", "*.example.com"},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}, EmailAddresses: []string{"a@example.com"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.tmpl.Subject.CommonName = "spiffe://" + testTD + "/kernel/node-1"
			svid, err := f.ca.Sign(makeCSR(t, keys()["p256"], tc.tmpl), id, 0)
			if err != nil {
				t.Fatalf("Sign: %v", err)
			}
			leaf := svid.Certificates[0]
			if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id.String() {
				t.Errorf("URI SANs %v, want exactly %s", leaf.URIs, id)
			}
			if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
				t.Errorf("SANs copied from the CSR: DNS %v, IP %v, e-mail %v", leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
			}
			if leaf.Subject.CommonName != "" {
				t.Errorf("subject CN %q copied from the CSR", leaf.Subject.CommonName)
			}
			got, _, err := x509svid.Verify(svid.Certificates, f.ca.Bundle(), x509svid.WithTime(f.clock.Now()))
			if err != nil || got != id {
				t.Errorf("verified as %v (%v), want %s", got, err, id)
			}
		})
	}
}

func TestSignLeafProfile(t *testing.T) {
	f := newFixture(t, nil)
	id := agentID(t, f.ca)
	now := f.clock.Now()
	serials := map[string]bool{}
	for range 20 {
		svid, err := f.ca.Sign(makeCSR(t, keys()["p256"], nil), id, 0)
		if err != nil {
			t.Fatal(err)
		}
		leaf := svid.Certificates[0]
		if leaf.IsCA || !leaf.BasicConstraintsValid {
			t.Fatalf("IsCA %v, basic constraints %v; want a leaf (CA false)", leaf.IsCA, leaf.BasicConstraintsValid)
		}
		if len(leaf.ExtKeyUsage) != 2 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth || leaf.ExtKeyUsage[1] != x509.ExtKeyUsageClientAuth {
			t.Fatalf("extended key usage %v, want serverAuth and clientAuth", leaf.ExtKeyUsage)
		}
		if n := leaf.SerialNumber; n.Sign() <= 0 || n.BitLen() > 128 {
			t.Fatalf("serial %v: want positive and at most 128 bits", n)
		}
		if svid.Serial != leaf.SerialNumber.Text(16) || svid.Serial != identity.SerialString(leaf.SerialNumber) {
			t.Fatalf("Serial %q, want the leaf's in hex (%s)", svid.Serial, leaf.SerialNumber.Text(16))
		}
		if serials[svid.Serial] {
			t.Fatalf("serial %s issued twice", svid.Serial)
		}
		serials[svid.Serial] = true
		if !leaf.NotBefore.Equal(now.Add(-identity.Backdate)) || !leaf.NotAfter.Equal(now.Add(identity.DefaultSVIDTTL)) || !svid.NotAfter.Equal(leaf.NotAfter) {
			t.Fatalf("valid %v to %v (NotAfter %v), want %v to %v", leaf.NotBefore, leaf.NotAfter, svid.NotAfter, now.Add(-identity.Backdate), now.Add(identity.DefaultSVIDTTL))
		}
		if len(svid.Certificates) != 2 || !svid.Certificates[1].IsCA {
			t.Fatalf("chain of %d certificates, want the leaf and the intermediate", len(svid.Certificates))
		}
		if svid.ID != id {
			t.Fatalf("ID %s, want %s", svid.ID, id)
		}
	}
	// go-spiffe's own X509-SVID checks accept the chain with its key.
	key := keys()["p256"]
	svid, err := f.ca.Sign(makeCSR(t, key, nil), id, 0)
	if err != nil {
		t.Fatal(err)
	}
	pk, _ := x509.MarshalPKCS8PrivateKey(key)
	if _, err := x509svid.ParseRaw(concat(svid.Certificates), pk); err != nil {
		t.Fatalf("go-spiffe refuses the SVID: %v", err)
	}
}

func concat(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, c.Raw...)
	}
	return out
}

func TestSignTTL(t *testing.T) {
	f := newFixture(t, func(c *identity.Config) { c.SVIDTTL, c.IntermediateTTL = time.Hour, 4*time.Hour })
	id := agentID(t, f.ca)
	csr := makeCSR(t, keys()["p256"], nil)
	for _, tc := range []struct {
		name    string
		advance time.Duration
		ttl     time.Duration
		want    func(now, inter time.Time) time.Time
	}{
		{"default", 0, 0, func(now, _ time.Time) time.Time { return now.Add(time.Hour) }},
		{"shorter on request", 0, 10 * time.Minute, func(now, _ time.Time) time.Time { return now.Add(10 * time.Minute) }},
		{"capped at the svid ttl", 0, 48 * time.Hour, func(now, _ time.Time) time.Time { return now.Add(time.Hour) }},
		// 3h30m later the intermediate (4h) has 30m left; the refresh that would replace it has
		// not run: the SVID ends with it.
		{"capped at the intermediate's expiry", 3*time.Hour + 30*time.Minute, 0, func(_, inter time.Time) time.Time { return inter }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.clock.Advance(tc.advance)
			svid, err := f.ca.Sign(csr, id, tc.ttl)
			if err != nil {
				t.Fatal(err)
			}
			if want := tc.want(f.clock.Now(), f.ca.IssuerNotAfter()); !svid.NotAfter.Equal(want) {
				t.Fatalf("NotAfter %v, want %v", svid.NotAfter, want)
			}
		})
	}
	t.Run("refused once the intermediate expired", func(t *testing.T) {
		f.clock.Advance(time.Hour)
		_, err := f.ca.Sign(csr, id, 0)
		if errs.CodeOf(err) != errs.Unavailable {
			t.Fatalf("Sign with an expired intermediate: %v, want unavailable", err)
		}
	})
}

func TestSignRefusesIDsOfAnotherTrustDomain(t *testing.T) {
	f := newFixture(t, nil)
	for _, s := range []string{"spiffe://other.test/tenant/ten_a/agent/agt_a", "spiffe://" + testTD} {
		id := spiffeid.RequireFromString(s)
		if _, err := f.ca.Sign(makeCSR(t, keys()["p256"], nil), id, 0); err == nil {
			t.Errorf("Sign for %s succeeded", s)
		}
	}
}

func TestIssueKernelSVID(t *testing.T) {
	f := newFixture(t, nil)
	svid, err := f.ca.IssueKernelSVID("node-1")
	if err != nil {
		t.Fatal(err)
	}
	if want := "spiffe://" + testTD + "/kernel/node-1"; svid.ID.String() != want {
		t.Fatalf("ID %s, want %s", svid.ID, want)
	}
	certs, key, err := svid.MarshalRaw()
	if err != nil {
		t.Fatal(err)
	}
	// ParseRaw checks the key matches the leaf and the leaf is a valid X509-SVID.
	parsed, err := x509svid.ParseRaw(certs, key)
	if err != nil {
		t.Fatalf("go-spiffe refuses the kernel SVID: %v", err)
	}
	if got, _, err := x509svid.Verify(parsed.Certificates, f.ca, x509svid.WithTime(f.clock.Now())); err != nil || got != svid.ID {
		t.Fatalf("verified as %v (%v) through the CA as a bundle source", got, err)
	}
	if _, err := f.ca.IssueKernelSVID("bad/node"); err == nil {
		t.Fatal("IssueKernelSVID accepted a node name with a slash")
	}
}

func TestDecodeCSR(t *testing.T) {
	der := makeCSR(t, keys()["p256"], nil)
	b64 := base64.StdEncoding.EncodeToString(der)
	// With line breaks every 64 characters, as tools wrap base64.
	var wrapped strings.Builder
	for i := 0; i < len(b64); i += 64 {
		wrapped.WriteString(b64[i:min(i+64, len(b64))] + "\n")
	}
	for _, tc := range []struct {
		name, in, refuse string
	}{
		{"PEM", csrPEM(der), ""},
		{"PEM with surrounding space", "\n  " + csrPEM(der) + "\n\n", ""},
		{"old PEM type", strings.ReplaceAll(csrPEM(der), "CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"), ""},
		{"base64", b64, ""},
		{"base64 wrapped", wrapped.String(), ""},
		{"base64 unpadded", base64.RawStdEncoding.EncodeToString(der), ""},
		{"base64url", base64.URLEncoding.EncodeToString(der), ""},
		{"base64url unpadded", base64.RawURLEncoding.EncodeToString(der), ""},
		{"empty", "  \n", "must not be empty"},
		{"certificate PEM", strings.ReplaceAll(csrPEM(der), "CERTIFICATE REQUEST", "CERTIFICATE"), "want CERTIFICATE REQUEST"},
		{"two blocks", csrPEM(der) + csrPEM(der), "exactly one PEM block"},
		{"broken PEM", "-----BEGIN CERTIFICATE REQUEST-----\nAAAA", "well-formed PEM"},
		{"not base64", "this is not a csr", "PEM CERTIFICATE REQUEST block or base64"},
		{"too long", strings.Repeat("A", identity.MaxCSRText+1), "at most"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := identity.DecodeCSR(tc.in)
			if tc.refuse != "" {
				wantCSRRefusal(t, err, tc.refuse)
				return
			}
			if err != nil {
				t.Fatalf("DecodeCSR: %v", err)
			}
			if string(got) != string(der) {
				t.Fatal("DecodeCSR returned other bytes than the CSR's DER")
			}
		})
	}
}

func TestSerialString(t *testing.T) {
	n, _ := new(big.Int).SetString("00ff0a", 16)
	if got := identity.SerialString(n); got != "ff0a" {
		t.Fatalf("SerialString = %q, want ff0a", got)
	}
}
