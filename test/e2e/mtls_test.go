package e2e

import (
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

// revokeSVID records a revocation through the API (body: serial or spiffe_id, reason).
func revokeSVID(t *testing.T, k *kerneltest.Kernel, auth string, body map[string]any) {
	t.Helper()
	resp, b := k.Do(t, "POST", "/v1/identity/revocations", body, auth)
	mustStatus(t, resp, b, http.StatusCreated)
}

// The refusals of issue 7 point 4, each its own subtest against the kernel's real mTLS listener.
// Every forged certificate but the other CA's chains to the kernel's own CA, so that each is
// refused for its one defect; a certificate forged the same way without a defect is accepted.
func TestMTLSRefusals(t *testing.T) {
	t.Parallel()
	m := newMTLSFixture(t)
	a := m.enroll(t, "alpha")
	ca := kernelIssuer(t, m.k)
	agentURI := a.id.String()

	t.Run("accepted", func(t *testing.T) {
		for _, s := range []svid{a.svid, ca.sign(t, leafTemplate(t, agentURI))} {
			resp, body := m.client(t, s.tlsCert()).do(t, "POST", "/v1/agents/"+a.agent+"/heartbeat", nil)
			mustStatus(t, resp, body, http.StatusOK)
		}
	})
	t.Run("no certificate", func(t *testing.T) {
		m.wantRefused(t, nil, "no_certificate")
	})
	t.Run("more than one URI SAN", func(t *testing.T) {
		other := "spiffe://" + m.td.Name() + "/tenant/" + m.tenant + "/agent/agt_01jz8y3w6v6r3b5q8x9k2m4n7b"
		m.wantRefused(t, ca.sign(t, leafTemplate(t, agentURI, other)).tlsCert(), "multiple_uri_sans")
	})
	t.Run("foreign trust domain", func(t *testing.T) {
		m.wantRefused(t, ca.sign(t, leafTemplate(t, "spiffe://elsewhere.test/tenant/"+m.tenant+"/agent/"+a.agent)).tlsCert(), "foreign_trust_domain")
	})
	t.Run("another CA", func(t *testing.T) {
		m.wantRefused(t, otherCA(t, m.td).sign(t, leafTemplate(t, agentURI)).tlsCert(), "unknown_authority")
	})
	t.Run("expired", func(t *testing.T) {
		tmpl := leafTemplate(t, agentURI)
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour)
		m.wantRefused(t, ca.sign(t, tmpl).tlsCert(), "expired")
	})
	t.Run("not yet valid", func(t *testing.T) {
		tmpl := leafTemplate(t, agentURI)
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(time.Hour), time.Now().Add(2*time.Hour)
		m.wantRefused(t, ca.sign(t, tmpl).tlsCert(), "not_yet_valid")
	})
	t.Run("revoked", func(t *testing.T) {
		b := m.enroll(t, "beta")
		c := m.client(t, b.svid.tlsCert())
		resp, body := c.do(t, "GET", "/v1/auth/whoami", nil)
		mustStatus(t, resp, body, http.StatusOK)
		revokeSVID(t, m.k, m.admin, map[string]any{"serial": b.svid.serial(), "reason": "e2e: key leaked"})
		m.wantRefused(t, b.svid.tlsCert(), "revoked")
	})
}

// An agent enrolled with its API key works over mTLS with the SVID it was issued: it heartbeats
// itself, sees its SPIFFE principal, renews its SVID with the current one; everything its scopes
// do not cover is refused with 403 naming why, and audited.
func TestMTLSAgentWorkload(t *testing.T) {
	t.Parallel()
	m := newMTLSFixture(t)
	a := m.enroll(t, "alpha")
	b := m.enroll(t, "beta")
	c := m.client(t, a.svid.tlsCert())

	resp, body := c.do(t, "POST", "/v1/agents/"+a.agent+"/heartbeat", map[string]any{"in_flight": 2})
	mustStatus(t, resp, body, http.StatusOK)
	if got := decode[struct {
		AgentID string `json:"agent_id"`
	}](t, body).AgentID; got != a.agent {
		t.Fatalf("heartbeat of %s answered for %s", a.agent, got)
	}

	resp, body = c.do(t, "GET", "/v1/auth/whoami", nil)
	mustStatus(t, resp, body, http.StatusOK)
	who := decode[struct {
		Subject   string    `json:"subject"`
		SPIFFEID  string    `json:"spiffe_id"`
		Tenant    string    `json:"tenant"`
		Roles     []string  `json:"roles"`
		Scopes    []string  `json:"scopes"`
		ExpiresAt time.Time `json:"expires_at"`
	}](t, body)
	if who.Subject != a.agent || who.SPIFFEID != a.id.String() || who.Tenant != m.tenant || len(who.Roles) != 0 || !who.ExpiresAt.Equal(a.svid.certs[0].NotAfter) ||
		!slices.Contains(who.Scopes, "registry:heartbeat:"+m.tenant) || !slices.Contains(who.Scopes, "invoke:*:"+m.tenant) {
		t.Fatalf("whoami over mTLS: %+v; want agent %s of %s, no roles, its SVID's expiry and the agent scopes", who, a.agent, m.tenant)
	}

	t.Run("another agent's heartbeat", func(t *testing.T) {
		resp, body := c.do(t, "POST", "/v1/agents/"+b.agent+"/heartbeat", nil)
		wantProblem(t, resp, body, http.StatusForbidden, "forbidden", "for itself only")
		if n := countAudit(t, m.k, m.keys["ADMIN"], "auth.authorize", "POST /v1/agents/"+b.agent+"/heartbeat"); n != 1 {
			t.Fatalf("%d audit records of the refusal, want 1", n)
		}
	})
	t.Run("a scope the agent lacks", func(t *testing.T) {
		resp, body := c.do(t, "POST", "/v1/agents", agentSpec("gamma"))
		wantProblem(t, resp, body, http.StatusForbidden, "forbidden", "registry:write:"+m.tenant)
		if n := countAudit(t, m.k, m.keys["ADMIN"], "auth.authorize", "POST /v1/agents"); n != 1 {
			t.Fatalf("%d audit records of the refusal, want 1", n)
		}
	})
	t.Run("whoami on the API listener names no SPIFFE ID", func(t *testing.T) {
		resp, body := m.k.Do(t, "GET", "/v1/auth/whoami", nil, a.key)
		mustStatus(t, resp, body, http.StatusOK)
		if strings.Contains(string(body), "spiffe_id") {
			t.Fatalf("whoami with the agent's API key: %s", body)
		}
	})
	t.Run("an operation outside the scope table", func(t *testing.T) {
		resp, body := c.do(t, "GET", "/v1/api-keys", nil)
		wantProblem(t, resp, body, http.StatusForbidden, "forbidden", "not open to workload identities")
	})
	t.Run("a credential besides the certificate", func(t *testing.T) {
		resp, body := c.do(t, "GET", "/v1/auth/whoami", nil, m.admin)
		wantProblem(t, resp, body, http.StatusUnauthorized, "unauthenticated", "client certificate is the credential")
		resp, body = c.do(t, "GET", "/v1/auth/whoami", nil, a.key)
		wantProblem(t, resp, body, http.StatusUnauthorized, "unauthenticated", "client certificate is the credential")
	})
	t.Run("a login", func(t *testing.T) {
		resp, body := c.do(t, "POST", "/v1/auth/token", map[string]any{"username": "admin", "password": kerneltest.AdminPassword})
		wantProblem(t, resp, body, http.StatusForbidden, "forbidden", "use the API listener")
		resp, body = c.do(t, "GET", "/v1/identity/bundle", nil)
		mustStatus(t, resp, body, http.StatusOK)
	})
	t.Run("a workload that is neither agent nor kernel", func(t *testing.T) {
		s := kernelIssuer(t, m.k).sign(t, leafTemplate(t, "spiffe://"+m.td.Name()+"/service/billing"))
		resp, body := m.client(t, s.tlsCert()).do(t, "GET", "/v1/auth/whoami", nil)
		wantProblem(t, resp, body, http.StatusForbidden, "forbidden", "granted nothing")
	})
	t.Run("renewal with the current SVID", func(t *testing.T) {
		priv := p256Key(t)
		resp, body := c.do(t, "POST", "/v1/identity/svid", map[string]any{"csr": csrPEM(t, priv)})
		mustStatus(t, resp, body, http.StatusOK)
		out := decode[svidResponse](t, body)
		if out.SPIFFEID != a.id.String() || out.Serial == a.svid.serial() {
			t.Fatalf("renewal issued %s serial %s; want %s with a new serial", out.SPIFFEID, out.Serial, a.id)
		}
		renewed := svid{certs: parseChain(t, out.SVIDChain), key: priv}
		resp, body = m.client(t, renewed.tlsCert()).do(t, "POST", "/v1/agents/"+a.agent+"/heartbeat", nil)
		mustStatus(t, resp, body, http.StatusOK)
		// The renewal names the agent only: it cannot ask for another's identity.
		resp, body = c.do(t, "POST", "/v1/identity/svid", map[string]any{"csr": csrPEM(t, p256Key(t)), "agent_id": b.agent})
		mustStatus(t, resp, body, http.StatusForbidden)
	})
	t.Run("a suspended tenant", func(t *testing.T) {
		resp, body := m.k.Do(t, "POST", "/v1/tenants/"+m.tenant+"/suspend", nil, m.admin)
		mustStatus(t, resp, body, http.StatusOK)
		kerneltest.WaitFor(t, 10*time.Second, "the suspension in force on the mTLS listener", func() bool {
			resp, _ := c.do(t, "GET", "/v1/auth/whoami", nil)
			return resp.StatusCode == http.StatusForbidden
		})
	})
}

// ABAC policies apply to workloads too: they see principal.kind "spiffe" and request.mtls_id.
func TestMTLSPolicyAppliesToWorkloads(t *testing.T) {
	t.Parallel()
	m := newMTLSFixture(t)
	a := m.enroll(t, "alpha")
	resp, body := m.k.Do(t, "POST", "/v1/policies", map[string]any{
		"name": "no-svid-heartbeats", "effect": "deny", "enabled": true,
		"expression": `principal.kind == "spiffe" && request.mtls_id == "` + a.id.String() + `" && action == "agents.heartbeat"`,
	}, m.keys["ADMIN"])
	mustStatus(t, resp, body, http.StatusCreated)
	c := m.client(t, a.svid.tlsCert())
	kerneltest.WaitFor(t, 10*time.Second, "the policy in force", func() bool {
		resp, _ := c.do(t, "POST", "/v1/agents/"+a.agent+"/heartbeat", nil)
		return resp.StatusCode == http.StatusForbidden
	})
	// The same agent with its API key on the API listener is no SPIFFE principal.
	resp, body = m.k.Do(t, "POST", "/v1/agents/"+a.agent+"/heartbeat", nil, a.key)
	mustStatus(t, resp, body, http.StatusOK)
	resp, body = c.do(t, "GET", "/v1/auth/whoami", nil)
	mustStatus(t, resp, body, http.StatusOK)
}

// A revocation recorded through a replica closes the open connections of the identity it revokes
// on that replica at once (before the API answers), and refuses its next handshakes. The
// revocation list is read only every minute here, so that only the API's applying the revocation
// on its own replica can explain what happens before the answer.
func TestMTLSRevocationClosesOpenConnection(t *testing.T) {
	t.Parallel()
	m := newMTLSFixture(t, func(c *config.Config) { c.Identity.RevocationRefreshInterval = config.Duration(time.Minute) })
	a := m.enroll(t, "alpha")
	b := m.enroll(t, "beta")
	c := m.client(t, a.svid.tlsCert())
	conn := c.dial(t)
	if st := conn.heartbeat(t, a.agent); st != http.StatusOK {
		t.Fatalf("heartbeat on the kept connection: %d", st)
	}
	bystander := m.client(t, b.svid.tlsCert()).dial(t)
	if st := bystander.heartbeat(t, b.agent); st != http.StatusOK {
		t.Fatalf("heartbeat of the bystander: %d", st)
	}

	revokeSVID(t, m.k, m.keys["ADMIN"], map[string]any{"spiffe_id": a.id.String(), "reason": "e2e: agent compromised"})
	if n := metricValue(t, m.k, "nops_mtls_revoked_connections_closed_total"); n != 1 {
		t.Fatalf("%v connections closed by the time the revocation was answered, want 1", n)
	}
	took := conn.waitClosed(t, 30*time.Second)
	t.Logf("the client saw its connection closed %s after the revocation was answered", took)
	m.wantRefused(t, a.svid.tlsCert(), "revoked")
	// Another agent's connection is untouched.
	if st := bystander.heartbeat(t, b.agent); st != http.StatusOK {
		t.Fatalf("heartbeat of the bystander after the revocation: %d", st)
	}
}

// Two replicas on PostgreSQL: a revocation recorded through one closes the open connection of
// the revoked identity on the other and refuses its next handshake there, within about the
// refresh interval.
func TestMTLSRevocationAcrossReplicas(t *testing.T) {
	t.Parallel()
	dbURL := services.Postgres(t)
	secrets := t.TempDir()
	shared := func(c *config.Config) {
		c.Database.URL = dbURL
		c.Signing.KEKFile, c.APIKeys.PepperFile = filepath.Join(secrets, "kek.json"), filepath.Join(secrets, "pepper.json")
		withMTLS(c)
	}
	m := mtlsFixtureOf(t, newFixture(t, shared))
	second := kerneltest.Start(t, shared)
	sv, err := second.Workload().GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	a := m.enroll(t, "alpha")
	onSecond := mtlsClientFor(t, second, m.bundle, sv.ID, a.svid.tlsCert())
	conn := onSecond.dial(t)
	if st := conn.heartbeat(t, a.agent); st != http.StatusOK {
		t.Fatalf("heartbeat on the second replica: %d", st)
	}

	revokeSVID(t, m.k, m.admin, map[string]any{"serial": a.svid.serial(), "reason": "e2e: replicas"})
	closed := conn.waitClosed(t, 30*time.Second)
	refused := kerneltest.WaitFor(t, 30*time.Second, "the second replica refusing the revoked SVID", func() bool {
		_, _, err := onSecond.try(t, "GET", "/v1/auth/whoami", nil)
		return err != nil
	})
	t.Logf("second replica: open connection closed %s after the revocation on the first, next handshake refused %s later (refresh interval %s)",
		closed, refused, mtlsRefresh)
	if n := refusals(t, second, "revoked"); n < 1 {
		t.Fatalf("the second replica counted %v refusals for revoked", n)
	}
}

// Deregistering an agent revokes its SPIFFE ID in the same transaction (threat model S-09): its
// open mTLS connection is closed and its SVID, still within its lifetime, is refused at the next
// handshake; the revocation is listed with the deregistration as its reason.
func TestMTLSDeregistrationRevokesSVID(t *testing.T) {
	t.Parallel()
	m := newMTLSFixture(t, func(c *config.Config) { c.Identity.RevocationRefreshInterval = config.Duration(time.Minute) })
	a := m.enroll(t, "leaving")
	conn := m.client(t, a.svid.tlsCert()).dial(t)
	if st := conn.heartbeat(t, a.agent); st != http.StatusOK {
		t.Fatalf("heartbeat before the deregistration: %d", st)
	}
	resp, body := m.k.Do(t, "DELETE", "/v1/agents/"+a.agent, nil, m.keys["ADMIN"])
	mustStatus(t, resp, body, http.StatusNoContent)
	conn.waitClosed(t, 30*time.Second)
	m.wantRefused(t, a.svid.tlsCert(), "revoked")

	resp, body = m.k.Do(t, "GET", "/v1/identity/revocations", nil, m.keys["ADMIN"])
	mustStatus(t, resp, body, http.StatusOK)
	if !strings.Contains(string(body), `"spiffe_id":"`+a.id.String()+`"`) || !strings.Contains(string(body), `"reason":"agent deregistered"`) {
		t.Fatalf("revocations after the deregistration: %s", body)
	}
}
