package e2e

import (
	"bytes"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/audit"
	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/events"
	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
)

func fastCheckpoints(c *config.Config) {
	c.Audit.CheckpointEvery = 1
	c.Audit.CheckpointInterval = config.Duration(200 * time.Millisecond)
}

type auditPage struct {
	Items []struct {
		Seq      int64  `json:"seq"`
		Action   string `json:"action"`
		Resource string `json:"resource"`
		Actor    struct {
			Principal string `json:"principal"`
			RequestID string `json:"request_id"`
		} `json:"actor"`
		Decision struct {
			Allowed bool   `json:"allowed"`
			Reason  string `json:"reason"`
		} `json:"decision"`
	} `json:"items"`
}

func TestAuditTrail(t *testing.T) {
	f := newFixture(t, fastCheckpoints)
	k := f.k
	resp, body := k.Do(t, "POST", "/v1/agents", agentSpec("audited"), f.keys["ADMIN"])
	mustStatus(t, resp, body, http.StatusCreated)
	agentID := decode[agentDoc](t, body).ID
	reqID := resp.Header.Get("X-Request-ID")
	resp, body = k.Do(t, "DELETE", "/v1/agents/"+agentID, nil, f.keys["VIEWER"]) // denied
	mustStatus(t, resp, body, http.StatusForbidden)
	resp, body = k.Do(t, "GET", "/v1/agents", nil, "X-API-Key: nops_ak01hxxxxxxxxxxxxxxxxxxxxxxxxx_notakey") // authentication failure
	mustStatus(t, resp, body, http.StatusUnauthorized)

	// The tenant's tree: its own mutations and denials, visible to its ADMIN.
	resp, body = k.Do(t, "GET", "/v1/audit", nil, f.keys["ADMIN"])
	mustStatus(t, resp, body, http.StatusOK)
	page := decode[auditPage](t, body)
	var registered, denied bool
	for _, r := range page.Items {
		if r.Action == "agent.register" && r.Resource == "agents/"+agentID && r.Decision.Allowed && r.Actor.RequestID == reqID {
			registered = true
		}
		if r.Action == "auth.authorize" && !r.Decision.Allowed && r.Decision.Reason != "" {
			denied = true
		}
		if strings.Contains(string(body), "nops_") {
			t.Fatal("an API key secret reached the audit trail")
		}
	}
	if !registered || !denied {
		t.Fatalf("tenant audit lacks the registration (%v) or the denial (%v): %s", registered, denied, body)
	}
	resp, body = k.Do(t, "GET", "/v1/audit?decision=deny", nil, f.keys["ADMIN"])
	mustStatus(t, resp, body, http.StatusOK)
	for _, r := range decode[auditPage](t, body).Items {
		if r.Decision.Allowed {
			t.Fatalf("decision=deny listed an allowed record: %s", body)
		}
	}

	// The global tree: tenant creation and the authentication failure, for SUPER_ADMIN.
	resp, body = k.Do(t, "GET", "/v1/audit", nil, f.admin)
	mustStatus(t, resp, body, http.StatusOK)
	if !strings.Contains(string(body), `"tenant.create"`) || !strings.Contains(string(body), `"auth.authenticate"`) {
		t.Fatalf("global audit lacks tenant.create or auth.authenticate: %s", body)
	}

	// A signed checkpoint appears; an inclusion proof verifies offline; an altered record does not.
	var cp struct {
		Size        int64  `json:"size"`
		Note        string `json:"note"`
		VerifierKey string `json:"verifier_key"`
	}
	kerneltest.WaitFor(t, 10*time.Second, "a signed checkpoint", func() bool {
		resp, body := k.Do(t, "GET", "/v1/audit/checkpoint", nil, f.keys["ADMIN"])
		if resp.StatusCode != http.StatusOK {
			return false
		}
		cp = decode[struct {
			Size        int64  `json:"size"`
			Note        string `json:"note"`
			VerifierKey string `json:"verifier_key"`
		}](t, body)
		return cp.Size >= 2
	})
	resp, body = k.Do(t, "GET", "/v1/audit/proof/inclusion?seq=0", nil, f.keys["ADMIN"])
	mustStatus(t, resp, body, http.StatusOK)
	bundle, err := audit.ParseBundle(body)
	if err != nil {
		t.Fatalf("parse bundle: %v\n%s", err, body)
	}
	if err := audit.CheckBundle(bundle, cp.VerifierKey); err != nil {
		t.Fatalf("the kernel's own proof does not verify: %v", err)
	}
	bundle.Record = bytes.Replace(bundle.Record, []byte(`"allowed":true`), []byte(`"allowed":false`), 1)
	if err := audit.CheckBundle(bundle, cp.VerifierKey); err == nil {
		t.Fatal("a proof for an altered record verified")
	}
	resp, body = k.Do(t, "GET", "/v1/audit/proof/consistency?from=1&to="+strconv.FormatInt(cp.Size, 10), nil, f.keys["ADMIN"])
	mustStatus(t, resp, body, http.StatusOK)

	resp, body = k.Do(t, "GET", "/v1/audit/verify", nil, f.keys["ADMIN"])
	mustStatus(t, resp, body, http.StatusOK)
	if !strings.Contains(string(body), `"ok":true`) {
		t.Fatalf("verify: %s", body)
	}
}

// TestOutboxOneEventPerChange checks that each committed change left exactly one event of the
// right type in the outbox, and a refused one none.
func TestOutboxOneEventPerChange(t *testing.T) {
	f := newFixture(t)
	k := f.k
	resp, body := k.Do(t, "POST", "/v1/agents", agentSpec("evented"), f.keys["ADMIN"])
	mustStatus(t, resp, body, http.StatusCreated)
	a := decode[agentDoc](t, body)
	etag := resp.Header.Get("ETag")
	resp, body = k.Do(t, "POST", "/v1/agents", agentSpec("evented"), f.keys["ADMIN"]) // 409: no event
	mustStatus(t, resp, body, http.StatusConflict)
	upd := agentSpec("evented")
	upd["version"] = "2.0.0"
	resp, body = k.Do(t, "PUT", "/v1/agents/"+a.ID, upd, f.keys["ADMIN"], "If-Match: "+etag)
	mustStatus(t, resp, body, http.StatusOK)
	resp, body = k.Do(t, "POST", "/v1/agents/"+a.ID+"/heartbeat", nil, f.keys["OPERATOR"])
	mustStatus(t, resp, body, http.StatusOK)
	resp, body = k.Do(t, "DELETE", "/v1/agents/"+a.ID, nil, f.keys["ADMIN"])
	mustStatus(t, resp, body, http.StatusNoContent)

	counts := map[events.Type]int{}
	for _, ev := range publishedEvents(t, k) {
		if ev.Subject == events.AgentSubject(a.ID) {
			counts[ev.Type]++
		}
	}
	want := map[events.Type]int{events.TypeAgentRegistered: 1, events.TypeAgentUpdated: 1, events.TypeAgentHeartbeat: 1, events.TypeAgentDeregistered: 1}
	for typ, n := range want {
		if counts[typ] != n {
			t.Errorf("%s events: %d, want %d (all: %v)", typ, counts[typ], n, counts)
		}
	}
	if len(counts) != len(want) {
		t.Errorf("unexpected events for the agent: %v", counts)
	}
}
