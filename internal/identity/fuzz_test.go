package identity_test

import (
	"encoding/base64"
	"testing"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/identity"
)

// FuzzCSR feeds arbitrary text through what POST /v1/identity/svid does with body.csr: decode,
// check, sign. Every refusal must be an invalid input naming body.csr (never a panic or an
// internal error), and whatever is signed must be an SVID of exactly the given ID.
func FuzzCSR(f *testing.F) {
	fx := newFixture(f, nil)
	id, err := identity.AgentID(fx.ca.TrustDomain(), "ten_a", "agt_a")
	if err != nil {
		f.Fatal(err)
	}
	for _, k := range []string{"p256", "ed25519"} {
		der := makeCSR(f, keys()[k], nil)
		f.Add(csrPEM(der))
		f.Add(base64.StdEncoding.EncodeToString(der))
		f.Add(base64.RawURLEncoding.EncodeToString(der[:len(der)/2]))
	}
	f.Add("-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n")
	f.Add("-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n")
	f.Add("MAMCAQE=")
	f.Add("")
	f.Fuzz(func(t *testing.T, text string) {
		der, err := identity.DecodeCSR(text)
		if err != nil {
			checkInvalidCSR(t, err)
			return
		}
		svid, err := fx.ca.Sign(der, id, 0)
		if err != nil {
			checkInvalidCSR(t, err)
			return
		}
		leaf := svid.Certificates[0]
		if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id.String() || len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
			t.Fatalf("signed an SVID with SANs URI %v DNS %v IP %v e-mail %v", leaf.URIs, leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
		}
		if _, _, err := x509svid.Verify(svid.Certificates, fx.ca.Bundle(), x509svid.WithTime(fx.clock.Now())); err != nil {
			t.Fatalf("signed an SVID that does not verify: %v", err)
		}
	})
}

func checkInvalidCSR(t *testing.T, err error) {
	t.Helper()
	e := errs.As(err)
	if e == nil || e.Code != errs.Invalid || len(e.Fields) != 1 || e.Fields[0].Name != "body.csr" {
		t.Fatalf("refusal %v is not an invalid input naming body.csr", err)
	}
}
