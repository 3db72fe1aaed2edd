package mtls_test

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nops-kernel/nops/internal/mtls"
)

func agentID(ca *testCA, agent string) spiffeid.ID {
	return ca.id("tenant", tenantX, "agent", agent)
}

func TestAcceptsValidSVIDAndPeerIDNamesIt(t *testing.T) {
	h := newHarness(t, nil)
	id := agentID(h.ca, agentA)
	svid := h.ca.svid(t, id, nil)
	resp := h.expectAccepted(t, h.client(t, newSVIDSource(svid), clientOpts{}), id)
	if got, want := resp.Header.Get("X-Peer-Serial"), svid.Certificates[0].SerialNumber.Text(16); got != want {
		t.Errorf("peer serial = %s, want %s", got, want)
	}
	if resp.TLS == nil || resp.TLS.Version != tls.VersionTLS13 {
		t.Errorf("negotiated %v, want TLS 1.3", resp.TLS)
	}
	if got := h.handshakes(t); got["accepted"] != 1 || len(got) != 1 {
		t.Errorf("handshakes = %v, want one accepted", got)
	}
}

func TestAcceptsSVIDIssuedByIntermediate(t *testing.T) {
	h := newHarness(t, nil)
	inter := h.ca.intermediate(t, nil)
	id := agentID(h.ca, agentA)
	h.expectAccepted(t, h.client(t, newSVIDSource(inter.svid(t, id, nil)), clientOpts{h2: true, keepAlive: true}), id)
}

func TestRefusesNoCertificate(t *testing.T) {
	h := newHarness(t, nil)
	h.expectRefused(t, nil, mtls.ReasonNoCertificate)
}

func TestRefusesTwoURISANs(t *testing.T) {
	h := newHarness(t, nil)
	id := agentID(h.ca, agentA)
	svid := h.ca.svid(t, id, func(c *x509.Certificate) {
		c.URIs = []*url.URL{id.URL(), agentID(h.ca, agentB).URL()}
	})
	h.expectRefused(t, newSVIDSource(svid), mtls.ReasonMultipleURISANs)
}

func TestRefusesNoURISAN(t *testing.T) {
	h := newHarness(t, nil)
	svid := h.ca.svid(t, agentID(h.ca, agentA), func(c *x509.Certificate) { c.URIs = nil; c.DNSNames = []string{"agent.example"} })
	h.expectRefused(t, newSVIDSource(svid), mtls.ReasonNoSPIFFEID)
}

func TestRefusesURISANThatIsNotASPIFFEID(t *testing.T) {
	h := newHarness(t, nil)
	svid := h.ca.svid(t, agentID(h.ca, agentA), func(c *x509.Certificate) {
		c.URIs = []*url.URL{{Scheme: "https", Host: "nops.test", Path: "/tenant/" + tenantX}}
	})
	h.expectRefused(t, newSVIDSource(svid), mtls.ReasonInvalidSPIFFEID)
}

func TestRefusesForeignTrustDomain(t *testing.T) {
	h := newHarness(t, nil)
	// The foreign domain's bundle is known (as if federated): the chain verifies, the trust domain
	// is still refused.
	foreign := newCA(t, "other.test")
	h.bundles.Add(foreign.bundle())
	h.expectRefused(t, newSVIDSource(foreign.svid(t, foreign.id("tenant", tenantX, "agent", agentA), nil)), mtls.ReasonForeignTrustDomain)
}

func TestRefusesCertificateFromAnotherCA(t *testing.T) {
	h := newHarness(t, nil)
	rogue := newCA(t, testTD) // same trust domain name, a root the bundle does not hold
	h.expectRefused(t, newSVIDSource(rogue.svid(t, agentID(rogue, agentA), nil)), mtls.ReasonUnknownAuthority)
}

func TestRefusesExpired(t *testing.T) {
	h := newHarness(t, nil)
	svid := h.ca.svid(t, agentID(h.ca, agentA), func(c *x509.Certificate) {
		c.NotBefore, c.NotAfter = time.Now().Add(-2*time.Hour), time.Now().Add(-time.Minute)
	})
	h.expectRefused(t, newSVIDSource(svid), mtls.ReasonExpired)
}

func TestRefusesExpiredIntermediate(t *testing.T) {
	h := newHarness(t, nil)
	inter := h.ca.intermediate(t, func(c *x509.Certificate) {
		c.NotBefore, c.NotAfter = time.Now().Add(-3*time.Hour), time.Now().Add(-time.Minute)
	})
	h.expectRefused(t, newSVIDSource(inter.svid(t, agentID(h.ca, agentA), nil)), mtls.ReasonExpired)
}

func TestRefusesNotYetValid(t *testing.T) {
	h := newHarness(t, nil)
	svid := h.ca.svid(t, agentID(h.ca, agentA), func(c *x509.Certificate) {
		c.NotBefore, c.NotAfter = time.Now().Add(time.Hour), time.Now().Add(2*time.Hour)
	})
	h.expectRefused(t, newSVIDSource(svid), mtls.ReasonNotYetValid)
}

func TestRefusesCALeaf(t *testing.T) {
	h := newHarness(t, nil)
	svid := h.ca.svid(t, agentID(h.ca, agentA), func(c *x509.Certificate) {
		c.IsCA, c.KeyUsage = true, x509.KeyUsageCertSign|x509.KeyUsageDigitalSignature
	})
	h.expectRefused(t, newSVIDSource(svid), mtls.ReasonNotLeaf)
}

func TestRefusesRevokedSerial(t *testing.T) {
	// Through the store, as a revocation recorded by another replica arrives.
	h := newHarness(t, func(c *harnessConfig) { c.store = true })
	id := agentID(h.ca, agentA)
	svid := h.ca.svid(t, id, nil)
	src := newSVIDSource(svid)
	h.expectAccepted(t, h.client(t, src, clientOpts{}), id)

	h.store.add(mtls.Revocation{Serial: "0x" + svid.Certificates[0].SerialNumber.Text(16), RevokedAt: time.Now()})
	c := h.client(t, src, clientOpts{})
	waitFor(t, "the revocation to refuse new handshakes", func() bool {
		_, _, err := get(c, h.url+"/")
		return err != nil
	})
	// The client sees the alert before the server's handshake result is counted.
	waitFor(t, "a handshake counted as refused for revoked", func() bool { return h.handshakes(t)["refused/revoked"] > 0 })
	// Another SVID of the same workload is not affected by a serial revocation.
	h.expectAccepted(t, h.client(t, newSVIDSource(h.ca.svid(t, id, nil)), clientOpts{}), id)
}

func TestRefusesRevokedIntermediateSerial(t *testing.T) {
	h := newHarness(t, nil)
	inter := h.ca.intermediate(t, nil)
	src := newSVIDSource(inter.svid(t, agentID(h.ca, agentA), nil))
	if err := h.srv.Revoke(t.Context(), mtls.Revocation{Serial: inter.cert.SerialNumber.Text(16), RevokedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	h.expectRefused(t, src, mtls.ReasonRevoked)
}

func TestRefusesRevokedSPIFFEID(t *testing.T) {
	h := newHarness(t, nil)
	id := agentID(h.ca, agentA)
	before := newSVIDSource(h.ca.svid(t, id, nil)) // NotBefore a minute ago
	revokedAt := time.Now().Add(-2 * time.Second)
	if err := h.srv.Revoke(t.Context(), mtls.Revocation{ID: id, RevokedAt: revokedAt}); err != nil {
		t.Fatal(err)
	}
	h.expectRefused(t, before, mtls.ReasonRevoked)

	// Other identities are unaffected, and an SVID issued after the revocation is accepted.
	other := agentID(h.ca, agentB)
	h.expectAccepted(t, h.client(t, newSVIDSource(h.ca.svid(t, other, nil)), clientOpts{}), other)
	later := h.ca.svid(t, id, func(c *x509.Certificate) { c.NotBefore = time.Now() })
	h.expectAccepted(t, h.client(t, newSVIDSource(later), clientOpts{}), id)
}

func TestRefusesRevokedSVIDOnSessionResumption(t *testing.T) {
	h := newHarness(t, nil)
	id := agentID(h.ca, agentA)
	svid := h.ca.svid(t, id, nil)
	cache := tls.NewLRUClientSessionCache(4)
	c := h.client(t, newSVIDSource(svid), clientOpts{keepAlive: true, mutate: func(c *tls.Config) { c.ClientSessionCache = cache }})
	h.expectAccepted(t, c, id)
	c.CloseIdleConnections()
	// Positive control: the next connection does resume, so the refusal below is the resumed
	// handshake's.
	if resp := h.expectAccepted(t, c, id); !resp.TLS.DidResume {
		t.Fatal("the second connection did not resume its session; the test proves nothing")
	}
	c.CloseIdleConnections()
	if err := h.srv.Revoke(t.Context(), mtls.Revocation{Serial: svid.Certificates[0].SerialNumber.Text(16), RevokedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := get(c, h.url+"/"); err == nil {
		t.Fatal("a revoked SVID resumed its session")
	}
	waitFor(t, "a handshake counted as refused for revoked", func() bool { return h.handshakes(t)["refused/revoked"] > 0 })
}

func TestRefusesEveryoneUntilRevocationsLoaded(t *testing.T) {
	h := newHarness(t, func(c *harnessConfig) {
		c.store, c.noLoad, c.storeFail = true, true, errInjected
		c.cfg.RefreshInterval = time.Hour // only the explicit Refresh below reads the store again
	})
	id := agentID(h.ca, agentA)
	src := newSVIDSource(h.ca.svid(t, id, nil))
	waitFor(t, "Run's first refresh", func() bool { return h.store.callCount() > 0 })
	h.expectRefused(t, src, mtls.ReasonRevocationsNotLoaded)

	h.store.setFail(nil)
	if err := h.srv.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	h.expectAccepted(t, h.client(t, src, clientOpts{}), id)
}

func TestRefusesTLS12(t *testing.T) {
	h := newHarness(t, nil)
	id := agentID(h.ca, agentA)
	c := h.client(t, newSVIDSource(h.ca.svid(t, id, nil)), clientOpts{mutate: func(c *tls.Config) {
		c.MinVersion, c.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	}})
	if _, _, err := get(c, h.url+"/"); err == nil {
		t.Fatal("a TLS 1.2 client was served")
	}
}

func TestRefusesWithoutConfigureHooks(t *testing.T) {
	h := newHarness(t, func(c *harnessConfig) { c.noConfig = true })
	h.expectRefused(t, newSVIDSource(h.ca.svid(t, agentID(h.ca, agentA), nil)), mtls.ReasonUntracked)
}

func TestPeerIDFalseOutsideTheListener(t *testing.T) {
	// A TLS server that asks for client certificates but was not prepared by Configure: the
	// certificate it got is not verified by mtls, and PeerID must not vouch for it.
	ca := newCA(t, testTD)
	svid := ca.svid(t, agentID(ca, agentA), nil)
	var ok bool
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, ok = mtls.PeerID(r)
	}))
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	defer srv.Close()
	cl := srv.Client()
	tr := cl.Transport.(*http.Transport)
	tr.TLSClientConfig.Certificates = []tls.Certificate{*tlsCert(svid)}
	defer tr.CloseIdleConnections()
	resp, err := cl.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ok {
		t.Error("PeerID vouched for a certificate mtls did not verify")
	}
	if _, ok := mtls.PeerID(httptest.NewRequest("GET", "/", nil)); ok {
		t.Error("PeerID of a plain request")
	}
}
