package egress

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// noIdentity is an identity.Source with nothing in it: the cache tests make no handshake.
type noIdentity struct{}

func (noIdentity) GetX509SVID() (*x509svid.SVID, error) { return nil, errors.New("none") }
func (noIdentity) GetX509BundleForTrustDomain(spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return nil, errors.New("none")
}
func (noIdentity) TrustDomain() spiffeid.TrustDomain {
	return spiffeid.RequireTrustDomainFromString("egress.test")
}

func agentIDs(n int) []spiffeid.ID {
	ids := make([]spiffeid.ID, n)
	for i := range ids {
		ids[i] = spiffeid.RequireFromSegments(noIdentity{}.TrustDomain(), "tenant", "t", "agent", string(rune('a'+i)))
	}
	return ids
}

func TestAgentTransportCacheIsBounded(t *testing.T) {
	tr, err := NewAgentTransport(Policy{}, noIdentity{}, AgentTransportOptions{MaxAgents: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.CloseIdleConnections()
	ids := agentIDs(3)
	a := tr.transportFor(ids[0], "t")
	b := tr.transportFor(ids[1], "t")
	if a == b {
		t.Fatal("two agents share a transport")
	}
	if again := tr.transportFor(ids[0], "t"); again != a {
		t.Fatal("the same agent got a new transport")
	}
	tr.transportFor(ids[2], "t") // over the bound: b, the least recently used, goes
	if n := tr.Agents(); n != 2 {
		t.Fatalf("%d transports cached, want 2", n)
	}
	if tr.transportFor(ids[0], "t") != a {
		t.Fatal("the recently used agent's transport was dropped")
	}
	if tr.transportFor(ids[1], "t") == b {
		t.Fatal("the least recently used agent's transport was kept")
	}
}

func TestAgentTransportCacheDropsIdleAgents(t *testing.T) {
	tr, err := NewAgentTransport(Policy{}, noIdentity{}, AgentTransportOptions{IdleAgentTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.CloseIdleConnections()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tr.now = func() time.Time { return now }
	ids := agentIDs(3)
	a := tr.transportFor(ids[0], "t")
	tr.transportFor(ids[1], "t")
	now = now.Add(30 * time.Second)
	tr.transportFor(ids[0], "t") // a used again; b not
	now = now.Add(45 * time.Second)
	tr.transportFor(ids[2], "t") // b idle 75 s > 1 min: dropped; a idle 45 s: kept
	if n := tr.Agents(); n != 2 {
		t.Fatalf("%d transports cached, want 2 (a and c)", n)
	}
	if tr.transportFor(ids[0], "t") != a {
		t.Fatal("an agent used within the idle timeout was dropped")
	}
}

func TestNewAgentTransportOptions(t *testing.T) {
	if _, err := NewAgentTransport(Policy{}, noIdentity{}, AgentTransportOptions{MaxAgents: -1}); err == nil {
		t.Fatal("negative MaxAgents accepted")
	}
	tr, err := NewAgentTransport(Policy{}, noIdentity{}, AgentTransportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if tr.max != DefaultMaxAgents || tr.idle != DefaultIdleConnTimeout {
		t.Fatalf("defaults: max %d idle %s", tr.max, tr.idle)
	}
}

// FuzzTLSRefusal: whatever certificate bytes an agent sends, naming the refusal never panics and
// always gives one of the reasons.
func FuzzTLSRefusal(f *testing.F) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	for _, uris := range [][]string{nil, {"spiffe://egress.test/tenant/t/agent/a"}, {"spiffe://other.test/x"}, {"https://a", "spiffe://egress.test/y"}} {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
		for _, u := range uris {
			pu, _ := url.Parse(u)
			tmpl.URIs = append(tmpl.URIs, pu)
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(der)
	}
	f.Add([]byte{})
	f.Add([]byte("not a certificate"))
	expected := agentIDs(1)[0]
	reasons := map[string]bool{
		TLSReasonNoCertificate: true, TLSReasonInvalidCertificate: true, TLSReasonNoSPIFFEID: true,
		TLSReasonForeignTrustDomain: true, TLSReasonUnknownAuthority: true, TLSReasonExpired: true,
		TLSReasonNotYetValid: true, TLSReasonWrongID: true,
	}
	f.Fuzz(func(t *testing.T, der []byte) {
		for _, cause := range []error{errors.New("refused"), x509.UnknownAuthorityError{}, x509.CertificateInvalidError{Reason: x509.Expired}} {
			e := tlsRefusal([][]byte{der}, expected, cause, time.Now())
			if !reasons[e.Reason] || e.Expected != expected.String() || !errors.Is(e, cause) {
				t.Fatalf("refusal %+v for cause %v", e, cause)
			}
			_ = e.Error()
		}
	})
}
