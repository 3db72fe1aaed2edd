package nops

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/nops-kernel/nops/sdk/go/nops/api"
)

// SVIDSource provides an agent's X.509-SVID and the trust bundle it chains to, kept current.
// An Agent with one serves https with the SVID (the kernel calls https endpoints over mTLS and
// checks that the agent presents the SVID of the agent the call is for) and accepts only the
// kernel's SVIDs as clients; ClientTLSConfig makes a Client call the kernel's mTLS listener with
// it. A renewed SVID is used from the next handshake on: connections and calls in flight keep
// theirs, so renewal drops nothing.
type SVIDSource interface {
	// Start obtains the first SVID of agentID and keeps it current until ctx ends.
	Start(ctx context.Context, agentID string) error
	// Current returns the SVID (leaf first, with its key) and the roots it chains to.
	Current() (*tls.Certificate, *x509bundle.Bundle, error)
}

// svidState is one SVID with its parsed chain and bundle.
type svidState struct {
	cert   *tls.Certificate
	id     spiffeid.ID
	bundle *x509bundle.Bundle
	leaf   *x509.Certificate
	got    time.Time // when it was received
}

// KernelSVIDs is an SVIDSource that asks the kernel's built-in CA (POST /v1/identity/svid) with
// a CSR for a key generated here (ECDSA P-256; the private key never leaves the process), and
// renews the SVID at half its lifetime (from when it was received), again with a fresh key.
type KernelSVIDs struct {
	c   *Client
	ttl time.Duration
	// asAdmin names the agent in the request: the client's credential is an ADMIN's, not the
	// agent's own (an agent-bound API key gets its own agent's SVID without naming it).
	asAdmin bool

	cur     atomic.Pointer[svidState]
	renewed atomic.Int64
	agentID string
	once    sync.Once
}

// KernelSVIDOptions tune NewKernelSVIDs.
type KernelSVIDOptions struct {
	// TTL asks for SVIDs shorter than the kernel's identity.svid_ttl (0: the kernel's).
	TTL time.Duration
	// NameAgent sends the agent's ID in the request, for a client whose credential is an ADMIN
	// key rather than a key bound to the agent.
	NameAgent bool
}

// NewKernelSVIDs returns a source of SVIDs issued by the kernel c talks to.
func NewKernelSVIDs(c *Client, o KernelSVIDOptions) *KernelSVIDs {
	return &KernelSVIDs{c: c, ttl: o.TTL, asAdmin: o.NameAgent}
}

// Start obtains the first SVID, then renews it in the background at half its lifetime; a failed
// renewal is retried (the client retries each call; then every tenth of the remaining lifetime,
// at least every second) while the current SVID stays in use.
func (s *KernelSVIDs) Start(ctx context.Context, agentID string) error {
	s.agentID = agentID
	if err := s.fetch(ctx); err != nil {
		return err
	}
	s.once.Do(func() { go s.renew(ctx) })
	return nil
}

// Renewals returns how many times the SVID was renewed after the first.
func (s *KernelSVIDs) Renewals() int64 { return s.renewed.Load() }

// Current returns the SVID in use.
func (s *KernelSVIDs) Current() (*tls.Certificate, *x509bundle.Bundle, error) {
	st := s.cur.Load()
	if st == nil {
		return nil, nil, errors.New("nops: no SVID yet")
	}
	return st.cert, st.bundle, nil
}

func (s *KernelSVIDs) renew(ctx context.Context) {
	for {
		// Half its lifetime, counted from when it was received (its NotBefore is back-dated for
		// clock skew).
		st := s.cur.Load()
		wait := time.Until(st.got.Add(st.leaf.NotAfter.Sub(st.got) / 2))
		for {
			t := time.NewTimer(max(wait, 0))
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			if err := s.fetch(ctx); err == nil {
				s.renewed.Add(1)
				break
			}
			wait = max(time.Until(st.leaf.NotAfter)/10, time.Second)
		}
	}
}

// fetch asks the kernel for an SVID for a fresh key and makes it current.
func (s *KernelSVIDs) fetch(ctx context.Context) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("nops: svid key: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return fmt.Errorf("nops: svid csr: %w", err)
	}
	req := api.SVIDRequest{Csr: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))}
	if s.ttl > 0 {
		secs := int(max(s.ttl/time.Second, 1))
		req.TtlSeconds = &secs
	}
	if s.asAdmin {
		id := s.agentID
		req.AgentId = &id
	}
	resp, err := s.c.API().IssueSVIDWithResponse(ctx, nil, req)
	if err != nil {
		return fmt.Errorf("nops: issue svid: %w", err)
	}
	out := resp.JSON200
	if out == nil {
		return fmt.Errorf("nops: issue svid: %w", problemOf(resp.StatusCode(), resp.Body))
	}
	st, err := parseSVID(out.SvidChain, out.Bundle, key)
	if err != nil {
		return fmt.Errorf("nops: issue svid: %w", err)
	}
	s.cur.Store(st)
	return nil
}

// parseSVID reads the PEM chain (leaf first) and the PEM roots the kernel returned.
func parseSVID(chainPEM, bundlePEM string, key crypto.Signer) (*svidState, error) {
	chain, err := parsePEMCerts(chainPEM)
	if err != nil || len(chain) == 0 {
		return nil, fmt.Errorf("svid chain: %v", err)
	}
	id, err := x509svid.IDFromCert(chain[0])
	if err != nil {
		return nil, fmt.Errorf("svid: %w", err)
	}
	roots, err := parsePEMCerts(bundlePEM)
	if err != nil || len(roots) == 0 {
		return nil, fmt.Errorf("svid bundle: %v", err)
	}
	cert := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	return &svidState{cert: cert, id: id, leaf: chain[0], got: time.Now(), bundle: x509bundle.FromX509Authorities(id.TrustDomain(), roots)}, nil
}

func parsePEMCerts(text string) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	rest := []byte(text)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return out, nil
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
}

// verifyKernel accepts a peer chain only when it is an SVID of a kernel ("/kernel/…") of the
// trust domain of src's bundle, chaining to its current roots.
func verifyKernel(src SVIDSource) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		_, b, err := src.Current()
		if err != nil {
			return err
		}
		certs := make([]*x509.Certificate, 0, len(raw))
		for _, r := range raw {
			c, err := x509.ParseCertificate(r)
			if err != nil {
				return fmt.Errorf("peer certificate: %w", err)
			}
			certs = append(certs, c)
		}
		id, _, err := x509svid.Verify(certs, b)
		if err != nil {
			return fmt.Errorf("peer svid: %w", err)
		}
		if !strings.HasPrefix(id.Path(), "/kernel/") {
			return fmt.Errorf("peer %s is not a kernel of %s", id, b.TrustDomain())
		}
		return nil
	}
}

// serverTLSConfig serves https with src's SVID to kernels of its trust domain only.
func serverTLSConfig(src SVIDSource) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			c, _, err := src.Current()
			return c, err
		},
		// Verified below against the bundle of the moment, which a CA rotation changes.
		ClientAuth:            tls.RequireAnyClientCert,
		VerifyPeerCertificate: verifyKernel(src),
		NextProtos:            []string{"http/1.1"},
	}
}

// ClientTLSConfig returns the TLS configuration with which a Client calls the kernel's mTLS
// listener (http.mtls_addr): it presents src's SVID, renewed or not, at each handshake, and
// accepts only a kernel's SVID of the trust domain. Set it as the TLSClientConfig of the
// Options.HTTPClient's transport; over mTLS the SVID is the credential, no API key is needed.
func ClientTLSConfig(src SVIDSource) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			c, _, err := src.Current()
			return c, err
		},
		// The kernel's SVID names no host: it is verified as an SVID, below.
		InsecureSkipVerify:    true, //nolint:gosec // verified by VerifyPeerCertificate
		VerifyPeerCertificate: verifyKernel(src),
	}
}
