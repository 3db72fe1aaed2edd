package mtls

import (
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Reason says why a client certificate was refused. Each is a value of the reason label of
// nops_mtls_handshakes_total.
type Reason string

// The reasons, in the order the checks run.
const (
	ReasonNoCertificate        Reason = "no_certificate"         // the client sent none
	ReasonNoSPIFFEID           Reason = "no_spiffe_id"           // the leaf has no URI SAN
	ReasonMultipleURISANs      Reason = "multiple_uri_sans"      // more than one URI SAN (X509-SVID §2)
	ReasonInvalidSPIFFEID      Reason = "invalid_spiffe_id"      // the URI SAN is not a SPIFFE ID
	ReasonForeignTrustDomain   Reason = "foreign_trust_domain"   // a SPIFFE ID of another trust domain
	ReasonNotLeaf              Reason = "not_a_leaf"             // CA flag or signing key usage on the leaf
	ReasonNotYetValid          Reason = "not_yet_valid"          // leaf NotBefore in the future
	ReasonExpired              Reason = "expired"                // leaf or intermediate NotAfter passed
	ReasonRevocationsNotLoaded Reason = "revocations_not_loaded" // the revocation list was never read yet
	ReasonUnknownAuthority     Reason = "unknown_authority"      // no chain to a root of the current bundle
	ReasonInvalidChain         Reason = "invalid_chain"          // any other chain failure (constraints, signature)
	ReasonRevoked              Reason = "revoked"                // a certificate serial or the SPIFFE ID is revoked
	ReasonUntracked            Reason = "untracked"              // the server's hooks are not installed (a wiring bug)
)

// RefusedError is the error of a refused client certificate. crypto/tls turns it into a
// bad_certificate alert; the client learns nothing more.
type RefusedError struct {
	Reason Reason
	ID     spiffeid.ID // zero when the certificate had no valid SPIFFE ID
	Serial string      // serial of the leaf, lowercase hex; "" without a certificate
	Err    error
}

func (e *RefusedError) Error() string {
	msg := "mtls: client certificate refused: " + string(e.Reason)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *RefusedError) Unwrap() error { return e.Err }

// ReasonOf returns the reason of a *RefusedError in err's chain, or "".
func ReasonOf(err error) Reason {
	if e, ok := errors.AsType[*RefusedError](err); ok {
		return e.Reason
	}
	return ""
}

// Peer is a verified client: its SPIFFE ID and the certificates it presented.
type Peer struct {
	ID           spiffeid.ID
	Serial       string // leaf serial, lowercase hex
	NotBefore    time.Time
	NotAfter     time.Time
	Certificates []*x509.Certificate // as presented, leaf first
}

// Verify checks a client's certificates, leaf first, as the handshake does: the X509-SVID rules,
// the trust domain, the validity period, the chain to the current bundle (x509svid.Verify) and
// the revocations. The error is a *RefusedError.
func (s *Server) Verify(certs []*x509.Certificate) (Peer, error) {
	now := s.now()
	if len(certs) == 0 {
		return Peer{}, &RefusedError{Reason: ReasonNoCertificate}
	}
	leaf := certs[0]
	refuse := func(r Reason, id spiffeid.ID, err error) (Peer, error) {
		return Peer{}, &RefusedError{Reason: r, ID: id, Serial: serialHex(leaf), Err: err}
	}
	// The SAN checks come first, and by hand rather than through x509svid.IDFromCert, so that each
	// case has its own reason.
	switch len(leaf.URIs) {
	case 0:
		return refuse(ReasonNoSPIFFEID, spiffeid.ID{}, nil)
	case 1:
	default:
		return refuse(ReasonMultipleURISANs, spiffeid.ID{}, fmt.Errorf("%d URI SANs", len(leaf.URIs)))
	}
	id, err := spiffeid.FromURI(leaf.URIs[0])
	if err != nil {
		return refuse(ReasonInvalidSPIFFEID, spiffeid.ID{}, err)
	}
	switch {
	case id.TrustDomain() != s.td:
		return refuse(ReasonForeignTrustDomain, id, fmt.Errorf("trust domain %s, want %s", id.TrustDomain(), s.td))
	case leaf.IsCA || leaf.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != 0:
		return refuse(ReasonNotLeaf, id, nil)
	case now.Before(leaf.NotBefore):
		return refuse(ReasonNotYetValid, id, fmt.Errorf("not before %s", leaf.NotBefore.UTC().Format(time.RFC3339)))
	case now.After(leaf.NotAfter):
		return refuse(ReasonExpired, id, fmt.Errorf("expired at %s", leaf.NotAfter.UTC().Format(time.RFC3339)))
	case !s.revs.loaded():
		// A replica that has not read the revocation list yet would accept revoked SVIDs: it
		// refuses everyone until the first refresh (the kernel calls Refresh before serving).
		return refuse(ReasonRevocationsNotLoaded, id, nil)
	}
	if _, err := s.bundle.GetX509BundleForTrustDomain(id.TrustDomain()); err != nil {
		return refuse(ReasonUnknownAuthority, id, err)
	}
	if _, _, err := x509svid.Verify(certs, s.bundle, x509svid.WithTime(now)); err != nil {
		return refuse(chainReason(err), id, err)
	}
	p := Peer{ID: id, Serial: serialHex(leaf), NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter, Certificates: certs}
	if rev, ok := s.revs.match(&p); ok {
		return refuse(ReasonRevoked, id, errors.New(rev.describe()))
	}
	return p, nil
}

// chainReason classifies a failure of x509.Certificate.Verify.
func chainReason(err error) Reason {
	if _, ok := errors.AsType[x509.UnknownAuthorityError](err); ok {
		return ReasonUnknownAuthority
	}
	if e, ok := errors.AsType[x509.CertificateInvalidError](err); ok && e.Reason == x509.Expired {
		return ReasonExpired // an intermediate out of its validity period
	}
	return ReasonInvalidChain
}

func serialHex(c *x509.Certificate) string {
	if c == nil || c.SerialNumber == nil {
		return ""
	}
	return c.SerialNumber.Text(16)
}
