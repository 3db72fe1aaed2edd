package httpapi

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/nops-kernel/nops/internal/control"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/httpapi/gen"
	"github.com/nops-kernel/nops/internal/identity"
	"github.com/nops-kernel/nops/internal/principal"
	"github.com/nops-kernel/nops/internal/sealbox"
	"github.com/nops-kernel/nops/internal/store/sqlite"
)

const identityTD = "nops.test"

// identityWorld is the managed world with a built-in CA over its store, an agent in tenant A and
// one in tenant B, and a key bound to A's agent.
type identityWorld struct {
	*eventsWorld
	ca             *identity.CA
	control        *control.Control
	agentA, agentB string
	agentKey       string // "key:…" bound to agentA, role OPERATOR
	agentKeyID     string
}

func newIdentityWorld(t *testing.T) *identityWorld {
	t.Helper()
	var (
		ca  *identity.CA
		ctl *control.Control
	)
	w := newEventsWorld(t, func(d *Deps) {
		ctl = d.Control
		st := d.AuditLog.(*sqlite.Store)
		secret := make([]byte, sealbox.KeyLen)
		if _, err := rand.Read(secret); err != nil {
			t.Fatal(err)
		}
		box, err := sealbox.New(sealbox.Key{Version: "k1", Secret: secret})
		if err != nil {
			t.Fatal(err)
		}
		if ca, err = identity.LoadOrCreate(t.Context(), st, box, identity.Config{TrustDomain: identityTD}); err != nil {
			t.Fatal(err)
		}
		d.Identity = ca
	})
	iw := &identityWorld{eventsWorld: w, ca: ca, control: ctl}
	spec := map[string]any{"name": "summarizer", "version": "1.0.0", "endpoint": "https://agent.example/run"}
	_, a := w.must(201, "POST", "/v1/agents", w.keys["ADMIN"], spec)
	_, b := w.must(201, "POST", "/v1/agents", w.otherAdmin, spec)
	iw.agentA, iw.agentB = a["id"].(string), b["id"].(string)
	_, k := w.must(201, "POST", "/v1/api-keys", w.keys["ADMIN"], map[string]any{"name": "agent", "role": "OPERATOR", "agent_id": iw.agentA})
	iw.agentKey, iw.agentKeyID = "key:"+k["secret"].(string), k["id"].(string)
	return iw
}

func csrFor(t *testing.T, key crypto.Signer, tmpl *x509.CertificateRequest) string {
	t.Helper()
	if tmpl == nil {
		tmpl = &x509.CertificateRequest{}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func p256(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// checkSVID parses an issuance response: the chain must verify against the response's bundle as
// exactly want, with no other SAN, and the serial must be the leaf's.
func checkSVID(t *testing.T, out map[string]any, want string) *x509.Certificate {
	t.Helper()
	if out["spiffe_id"] != want {
		t.Fatalf("spiffe_id %v, want %s", out["spiffe_id"], want)
	}
	certs := parsePEMCerts(t, out["svid_chain"].(string))
	roots := parsePEMCerts(t, out["bundle"].(string))
	if len(certs) != 2 || len(roots) != 1 {
		t.Fatalf("chain of %d certificates and bundle of %d, want 2 and 1", len(certs), len(roots))
	}
	td := spiffeid.RequireTrustDomainFromString(identityTD)
	id, _, err := x509svid.Verify(certs, x509bundle.FromX509Authorities(td, roots))
	if err != nil || id.String() != want {
		t.Fatalf("chain verifies as %v (%v), want %s", id, err, want)
	}
	leaf := certs[0]
	if len(leaf.URIs) != 1 || len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
		t.Fatalf("leaf SANs: URI %v DNS %v IP %v e-mail %v", leaf.URIs, leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
	}
	if out["serial"] != leaf.SerialNumber.Text(16) {
		t.Fatalf("serial %v, leaf's %s", out["serial"], leaf.SerialNumber.Text(16))
	}
	if exp, err := time.Parse(time.RFC3339, out["expires_at"].(string)); err != nil || !exp.Equal(leaf.NotAfter) {
		t.Fatalf("expires_at %v, leaf's NotAfter %v", out["expires_at"], leaf.NotAfter)
	}
	return leaf
}

func parsePEMCerts(t *testing.T, s string) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	rest := []byte(s)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

func agentSPIFFE(tenantID, agentID string) string {
	return "spiffe://" + identityTD + "/tenant/" + tenantID + "/agent/" + agentID
}

func TestIssueSVIDToAnAgentKeyIsItsOwnID(t *testing.T) {
	w := newIdentityWorld(t)
	// The CSR asks for another agent's ID, a DNS name and an address: none is copied.
	other, _ := url.Parse(agentSPIFFE(w.b, w.agentB))
	csr := csrFor(t, p256(t), &x509.CertificateRequest{URIs: []*url.URL{other}, DNSNames: []string{"kernel.internal"},
		IPAddresses: []net.IP{net.ParseIP("10.0.0.1")}})
	_, out := w.must(200, "POST", "/v1/identity/svid", w.agentKey, map[string]any{"csr": csr})
	leaf := checkSVID(t, out, agentSPIFFE(w.a, w.agentA))
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life != time.Hour+identity.Backdate {
		t.Errorf("lifetime %v, want the default hour (+ backdate)", life)
	}
	// A shorter lifetime on request.
	_, out = w.must(200, "POST", "/v1/identity/svid", w.agentKey, map[string]any{"csr": csr, "ttl_seconds": 60})
	if leaf := checkSVID(t, out, agentSPIFFE(w.a, w.agentA)); leaf.NotAfter.Sub(leaf.NotBefore) != time.Minute+identity.Backdate {
		t.Errorf("ttl_seconds 60 gave %v", leaf.NotAfter.Sub(leaf.NotBefore))
	}
	// The agent naming itself is fine; naming another agent is refused and audited.
	w.must(200, "POST", "/v1/identity/svid", w.agentKey, map[string]any{"csr": csr, "agent_id": w.agentA})
	w.must(403, "POST", "/v1/identity/svid", w.agentKey, map[string]any{"csr": csr, "agent_id": w.agentB})

	reasons := w.auditOf(w.keys["ADMIN"], identity.AuditActionIssue)
	allowed, denied := 0, 0
	for _, r := range reasons {
		switch {
		case strings.HasPrefix(r, "allowed: serial "):
			allowed++
		case strings.HasPrefix(r, "denied: an agent is issued SVIDs for itself only"):
			denied++
		}
	}
	if allowed != 3 || denied != 1 {
		t.Fatalf("audit reasons %q: want 3 issuances and 1 denial", reasons)
	}
	if !strings.Contains(strings.Join(reasons, "\n"), out["serial"].(string)) {
		t.Fatalf("no audit record names serial %s: %q", out["serial"], reasons)
	}
}

func TestIssueSVIDWithATokenOfAnAgentKey(t *testing.T) {
	w := newIdentityWorld(t)
	tok := w.login(map[string]any{"api_key": strings.TrimPrefix(w.agentKey, "key:")})
	csr := csrFor(t, p256(t), nil)
	_, out := w.must(200, "POST", "/v1/identity/svid", tok, map[string]any{"csr": csr})
	checkSVID(t, out, agentSPIFFE(w.a, w.agentA))
	// Once the key is revoked, the token still authenticates for its lifetime, but it is no
	// agent's credential any more.
	w.must(204, "DELETE", "/v1/api-keys/"+w.agentKeyID, w.keys["ADMIN"], nil)
	w.must(403, "POST", "/v1/identity/svid", tok, map[string]any{"csr": csr})
}

func TestIssueSVIDToCallersThatAreNoAgent(t *testing.T) {
	w := newIdentityWorld(t)
	csr := csrFor(t, p256(t), nil)
	// A tenant key not bound to an agent, even naming one, is no operator of issuance.
	w.must(403, "POST", "/v1/identity/svid", w.keys["OPERATOR"], map[string]any{"csr": csr})
	w.must(403, "POST", "/v1/identity/svid", w.keys["OPERATOR"], map[string]any{"csr": csr, "agent_id": w.agentA})
	// What the e2e permission matrices rely on: a caller naming another tenant gets 404 before its
	// CSR is looked at, and one RBAC allows gets a 400 for a bad CSR, not a 403.
	w.must(404, "POST", "/v1/identity/svid?tenant="+w.b, w.keys["OPERATOR"], map[string]any{"csr": "x"})
	w.must(400, "POST", "/v1/identity/svid", w.keys["OPERATOR"], map[string]any{"csr": "x"})
	// VIEWER lacks the scope (RBAC).
	w.must(403, "POST", "/v1/identity/svid", w.keys["VIEWER"], map[string]any{"csr": csr})
	// An ADMIN must name the agent; one of its tenant gets it, another tenant's is not found.
	_, bad := w.must(400, "POST", "/v1/identity/svid", w.keys["ADMIN"], map[string]any{"csr": csr})
	wantFields(t, bad, "body.agent_id")
	_, out := w.must(200, "POST", "/v1/identity/svid", w.keys["ADMIN"], map[string]any{"csr": csr, "agent_id": w.agentA})
	checkSVID(t, out, agentSPIFFE(w.a, w.agentA))
	w.must(404, "POST", "/v1/identity/svid", w.keys["ADMIN"], map[string]any{"csr": csr, "agent_id": w.agentB})
	w.must(404, "POST", "/v1/identity/svid?tenant="+w.b, w.keys["ADMIN"], map[string]any{"csr": csr, "agent_id": w.agentB})
	w.must(404, "POST", "/v1/identity/svid", w.keys["ADMIN"], map[string]any{"csr": csr, "agent_id": "agt_01jz0000000000000000000000"})
	// The SUPER_ADMIN names the tenant.
	_, bad = w.must(400, "POST", "/v1/identity/svid", w.admin, map[string]any{"csr": csr, "agent_id": w.agentB})
	wantFields(t, bad, "query.tenant")
	_, out = w.must(200, "POST", "/v1/identity/svid?tenant="+w.b, w.admin, map[string]any{"csr": csr, "agent_id": w.agentB})
	checkSVID(t, out, agentSPIFFE(w.b, w.agentB))

	denials := 0
	for _, r := range w.auditOf(w.keys["ADMIN"], identity.AuditActionIssue) {
		if strings.HasPrefix(r, "denied: the caller is no agent") {
			denials++
		}
	}
	if denials != 2 {
		t.Fatalf("%d audited denials of callers that are no agent, want 2", denials)
	}
}

func TestIssueSVIDRefusesBadCSRs(t *testing.T) {
	w := newIdentityWorld(t)
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	good := csrFor(t, p256(t), nil)
	block, _ := pem.Decode([]byte(good))
	block.Bytes[len(block.Bytes)-2] ^= 0x01 // inside the signature
	forged := string(pem.EncodeToMemory(block))
	for name, csr := range map[string]string{
		"not a CSR":        "not a csr at all",
		"certificate PEM":  strings.ReplaceAll(good, "CERTIFICATE REQUEST", "CERTIFICATE"),
		"RSA-1024":         csrFor(t, weak, nil),
		"forged signature": forged,
	} {
		t.Run(name, func(t *testing.T) {
			_, bad := w.must(400, "POST", "/v1/identity/svid", w.agentKey, map[string]any{"csr": csr})
			wantFields(t, bad, "body.csr")
		})
	}
	for _, r := range w.auditOf(w.keys["ADMIN"], identity.AuditActionIssue) {
		if strings.HasPrefix(r, "allowed") {
			t.Fatalf("a refused CSR was recorded as an issuance: %q", r)
		}
	}
}

func TestIssueSVIDForADeregisteredAgent(t *testing.T) {
	w := newIdentityWorld(t)
	csr := csrFor(t, p256(t), nil)
	w.must(204, "DELETE", "/v1/agents/"+w.agentA, w.keys["ADMIN"], nil)
	// Its keys went with it; an operator naming it, and its SVID (still valid until it expires),
	// get nothing new.
	w.must(401, "POST", "/v1/identity/svid", w.agentKey, map[string]any{"csr": csr})
	w.must(404, "POST", "/v1/identity/svid", w.keys["ADMIN"], map[string]any{"csr": csr, "agent_id": w.agentA})
	h := &handlers{deps: Deps{Control: w.control, Identity: w.ca}}
	ctx := principal.NewContext(context.Background(), principal.Principal{Subject: w.agentA, Tenant: w.a, TokenID: "svid:1f"})
	if _, err := h.IssueSVID(ctx, gen.IssueSVIDRequestObject{Body: &gen.SVIDRequest{Csr: csr}}); errs.CodeOf(err) != errs.NotFound {
		t.Fatalf("renewal by a deregistered agent's SVID = %v, want not found", err)
	}
}

// The principal the mTLS listener puts in the context for an agent's SVID (internal/scope:
// Subject the agent ID, Tenant its tenant, no roles) renews that agent's SVID; a SPIFFE ID
// subject is understood too, and one of another tenant than the principal's is refused.
func TestIssueSVIDToAnSVIDPrincipal(t *testing.T) {
	w := newIdentityWorld(t)
	h := &handlers{deps: Deps{Control: w.control, Identity: w.ca}}
	csr := csrFor(t, p256(t), nil)
	issue := func(p principal.Principal) (gen.IssueSVIDResponseObject, error) {
		ctx := principal.NewContext(context.Background(), p)
		return h.IssueSVID(ctx, gen.IssueSVIDRequestObject{Body: &gen.SVIDRequest{Csr: csr}})
	}
	for name, p := range map[string]principal.Principal{
		"agent subject":     {Subject: w.agentA, Tenant: w.a, TokenID: "svid:1f"},
		"SPIFFE ID subject": {Subject: agentSPIFFE(w.a, w.agentA), Tenant: w.a, TokenID: "svid:1f"},
	} {
		t.Run(name, func(t *testing.T) {
			resp, err := issue(p)
			if err != nil {
				t.Fatal(err)
			}
			if got := resp.(gen.IssueSVID200JSONResponse).SpiffeId; got != agentSPIFFE(w.a, w.agentA) {
				t.Fatalf("spiffe_id %s", got)
			}
		})
	}
	for name, p := range map[string]principal.Principal{
		"SPIFFE ID of another tenant": {Subject: agentSPIFFE(w.b, w.agentB), Tenant: w.a},
		"SPIFFE ID of a kernel":       {Subject: "spiffe://" + identityTD + "/kernel/node-1"},
		"foreign trust domain":        {Subject: "spiffe://evil.test/tenant/" + w.a + "/agent/" + w.agentA, Tenant: w.a},
		"agent without a tenant":      {Subject: w.agentA},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := issue(p); errs.CodeOf(err) != errs.Forbidden {
				t.Fatalf("IssueSVID = %v, want forbidden", err)
			}
		})
	}
	// An agent subject of another tenant's agent does not exist in the principal's tenant.
	if _, err := issue(principal.Principal{Subject: w.agentB, Tenant: w.a}); errs.CodeOf(err) != errs.NotFound {
		t.Fatalf("IssueSVID for another tenant's agent = %v, want not found", err)
	}
}

func TestTrustBundleIsPublicAndCacheable(t *testing.T) {
	w := newIdentityWorld(t)
	r := httptest.NewRequest("GET", "/v1/identity/bundle", nil)
	rec := httptest.NewRecorder()
	w.h.ServeHTTP(rec, r)
	w.checkResponse(r, nil, rec)
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/json" || rec.Header().Get("Cache-Control") != bundleCacheControl {
		t.Fatalf("status %d, Content-Type %q, Cache-Control %q", rec.Code, rec.Header().Get("Content-Type"), rec.Header().Get("Cache-Control"))
	}
	body, _ := io.ReadAll(rec.Body)
	b, err := spiffebundle.Parse(spiffeid.RequireTrustDomainFromString(identityTD), body)
	if err != nil {
		t.Fatalf("spiffebundle.Parse: %v\n%s", err, body)
	}
	if roots := b.X509Authorities(); len(roots) != 1 || !roots[0].Equal(w.ca.Bundle().X509Authorities()[0]) {
		t.Fatalf("bundle of %d roots, want the CA's", len(roots))
	}
	etag := rec.Header().Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	for _, tc := range []struct {
		inm  string
		want int
	}{{etag, 304}, {`"other", ` + etag, 304}, {"W/" + etag, 304}, {"*", 304}, {`"other"`, 200}} {
		r := httptest.NewRequest("GET", "/v1/identity/bundle", nil)
		r.Header.Set("If-None-Match", tc.inm)
		rec := httptest.NewRecorder()
		w.h.ServeHTTP(rec, r)
		w.checkResponse(r, nil, rec)
		if rec.Code != tc.want || rec.Header().Get("ETag") != etag {
			t.Errorf("If-None-Match %s: status %d, ETag %q; want %d and %s", tc.inm, rec.Code, rec.Header().Get("ETag"), tc.want, etag)
		}
	}
}

func TestIdentityEndpointsWithoutACA(t *testing.T) {
	f := newFlow(t)
	admin := f.login(map[string]any{"username": "admin", "password": flowAdminPassword})
	f.must(http.StatusServiceUnavailable, "GET", "/v1/identity/bundle", "", nil)
	f.must(http.StatusServiceUnavailable, "POST", "/v1/identity/svid", admin, map[string]any{"csr": "x", "agent_id": "agt_x"})
}
