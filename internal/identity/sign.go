package identity

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/nops-kernel/nops/internal/errs"
)

// Limits on certificate signing requests.
const (
	// MaxCSRText bounds the text of a CSR (PEM or base64) a client sends: an RSA-4096 request
	// with a few extensions is under 3 KiB of PEM.
	MaxCSRText = 16 << 10
	// MinRSABits and MaxRSABits bound an RSA key: below 2048 bits is too weak, above 4096 only
	// costs the kernel verification time.
	MinRSABits = 2048
	MaxRSABits = 4096
)

// csrField is the request field CSR problems name.
const csrField = "body.csr"

// SVID is an issued X.509-SVID without its private key, which stays with the requester.
type SVID struct {
	ID           spiffeid.ID
	Certificates []*x509.Certificate // the leaf, then the intermediate that signed it
	Serial       string              // the leaf's serial number, lower-case hex without leading zeros
	NotAfter     time.Time           // the leaf's expiry, UTC
}

// ChainPEM returns the certificates as PEM, leaf first.
func (s SVID) ChainPEM() []byte {
	var out []byte
	for _, c := range s.Certificates {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// DecodeCSR returns the DER of a certificate signing request sent as one PEM block ("CERTIFICATE
// REQUEST") or as base64 (standard or URL alphabet, padded or not). Anything else is an
// errs.Invalid naming body.csr. It does not parse the DER: CheckCSR does.
func DecodeCSR(text string) ([]byte, error) {
	if len(text) > MaxCSRText {
		return nil, errs.Field(csrField, fmt.Sprintf("must be at most %d bytes", MaxCSRText))
	}
	text = strings.TrimSpace(text)
	if text == "" {
		return nil, errs.Field(csrField, "must not be empty")
	}
	if strings.HasPrefix(text, "-----BEGIN") {
		block, rest := pem.Decode([]byte(text))
		switch {
		case block == nil:
			return nil, errs.Field(csrField, "is not a well-formed PEM block")
		case block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST":
			return nil, errs.Field(csrField, fmt.Sprintf("is a PEM %q block, want CERTIFICATE REQUEST", truncate(block.Type, 40)))
		case len(bytes.TrimSpace(rest)) != 0:
			return nil, errs.Field(csrField, "must hold exactly one PEM block")
		}
		return block.Bytes, nil
	}
	// Line breaks are allowed in base64 (the decoders skip \r and \n), other white space is not.
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if der, err := enc.DecodeString(text); err == nil {
			return der, nil
		}
	}
	return nil, errs.Field(csrField, "must be a PEM CERTIFICATE REQUEST block or base64 DER")
}

// CheckCSR parses a PKCS #10 request and checks what the CA relies on: the request is signed by
// the key it carries (proof of possession), and that key is ECDSA P-256 or P-384, Ed25519, or RSA
// of MinRSABits to MaxRSABits bits. Everything else in the request — subject, SANs, extensions —
// is ignored by Sign. Refusals are errs.Invalid naming body.csr.
func CheckCSR(der []byte) (*x509.CertificateRequest, error) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, csrError("is not a DER PKCS #10 certificate request", err)
	}
	if err := checkKey(csr.PublicKey); err != nil {
		return nil, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, csrError("signature does not verify with the request's public key", err)
	}
	return csr, nil
}

// csrError is an errs.Invalid naming body.csr, with the cause kept for the logs.
func csrError(reason string, cause error) error {
	e := errs.Field(csrField, reason)
	e.Err = cause
	return e
}

// checkKey accepts the key types the CA signs for.
func checkKey(pub any) error {
	const accepted = "ECDSA P-256 or P-384, Ed25519, or RSA of 2048 to 4096 bits"
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() || k.Curve == elliptic.P384() {
			return nil
		}
		return errs.Field(csrField, "unsupported ECDSA curve: want "+accepted)
	case ed25519.PublicKey:
		return nil
	case *rsa.PublicKey:
		if bits := k.N.BitLen(); bits < MinRSABits || bits > MaxRSABits {
			return errs.Field(csrField, fmt.Sprintf("RSA key of %d bits: want %s", bits, accepted))
		}
		return nil
	}
	return errs.Field(csrField, fmt.Sprintf("unsupported key type %T: want %s", pub, accepted))
}

// Sign checks the request (CheckCSR) and issues an X.509-SVID for id to the request's public key.
// The SVID's identity is id alone: the request's subject, SANs and extensions are ignored, so a
// request asking for another SPIFFE ID, DNS names or addresses still gets exactly one URI SAN, id.
// ttl <= 0 means the CA's SVIDTTL, which is also the longest lifetime granted; no SVID outlives the
// intermediate that signs it. id must be of the CA's trust domain.
func (ca *CA) Sign(csrDER []byte, id spiffeid.ID, ttl time.Duration) (SVID, error) {
	csr, err := CheckCSR(csrDER)
	if err != nil {
		return SVID{}, err
	}
	svid, err := ca.issue(csr.PublicKey, id, ttl)
	if err != nil {
		return SVID{}, err
	}
	ca.countIssued(context.Background(), "agent")
	return svid, nil
}

// IssueKernelSVID issues an X.509-SVID with a key generated in the process for the kernel node,
// spiffe://<td>/kernel/<node>, living SVIDTTL: the kernel's own identity on its mTLS listener and
// on its calls to agents.
func (ca *CA) IssueKernelSVID(node string) (*x509svid.SVID, error) {
	id, err := KernelID(ca.td, node)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("kernel svid: generate a key: %w", err)
	}
	s, err := ca.issue(key.Public(), id, 0)
	if err != nil {
		return nil, err
	}
	ca.countIssued(context.Background(), "kernel")
	return &x509svid.SVID{ID: id, Certificates: s.Certificates, PrivateKey: key}, nil
}

// issue signs a leaf for pub with the current intermediate.
func (ca *CA) issue(pub crypto.PublicKey, id spiffeid.ID, ttl time.Duration) (SVID, error) {
	if !id.MemberOf(ca.td) || id.Path() == "" {
		return SVID{}, fmt.Errorf("issue svid: %s is not a workload of trust domain %s", id, ca.td)
	}
	if ttl <= 0 || ttl > ca.cfg.SVIDTTL {
		ttl = ca.cfg.SVIDTTL
	}
	now := ca.cfg.Now()
	// The intermediate activated last: a rotated root's starts issuing at its activation.
	issuer := ca.cur.Load().issuerAt(now)
	if issuer.cert == nil {
		return SVID{}, errs.New(errs.Unavailable, "the identity CA has no intermediate to issue with; one is created on the next refresh")
	}
	notAfter := minTime(now.Add(ttl), issuer.cert.NotAfter)
	if !notAfter.After(now) {
		return SVID{}, errs.New(errs.Unavailable, "the identity CA's intermediate has expired; it is renewed on the next refresh")
	}
	serial, err := newSerial()
	if err != nil {
		return SVID{}, err
	}
	usage := x509.KeyUsageDigitalSignature
	if _, isRSA := pub.(*rsa.PublicKey); isRSA {
		// RSA key exchange (TLS 1.2 without ECDHE) encrypts with the leaf's key.
		usage |= x509.KeyUsageKeyEncipherment
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"NOPS Kernel"}},
		URIs:                  []*url.URL{id.URL()},
		NotBefore:             now.Add(-Backdate),
		NotAfter:              notAfter,
		KeyUsage:              usage,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer.cert, pub, issuer.key)
	if err != nil {
		return SVID{}, fmt.Errorf("issue svid for %s: %w", id, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return SVID{}, fmt.Errorf("issue svid for %s: parse the new certificate: %w", id, err)
	}
	return SVID{ID: id, Certificates: []*x509.Certificate{leaf, issuer.cert}, Serial: SerialString(leaf.SerialNumber),
		NotAfter: leaf.NotAfter.UTC()}, nil
}

// SerialString renders a certificate serial number as the kernel names it (audit records,
// revocations): lower-case hex without leading zeros.
func SerialString(n *big.Int) string { return n.Text(16) }

// newSerial draws a positive 128-bit serial number (RFC 5280 §4.1.2.2 allows up to 20 octets).
func newSerial() (*big.Int, error) {
	b := make([]byte, 16)
	for {
		if _, err := rand.Read(b); err != nil {
			return nil, fmt.Errorf("draw a serial number: %w", err)
		}
		if n := new(big.Int).SetBytes(b); n.Sign() > 0 {
			return n, nil
		}
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
