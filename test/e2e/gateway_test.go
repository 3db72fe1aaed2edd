package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/events"
	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
	"github.com/nops-kernel/nops/internal/reqsig"
)

// gatewayCall sends a request to the Zero Agent Gateway at base, signed with key unless key is
// nil, with auth ("Name: value") as its credential.
func gatewayCall(t *testing.T, k *kerneltest.Kernel, base, method, path, auth string, key *reqsig.SignerKey) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		name, value, _ := strings.Cut(auth, ":")
		req.Header.Set(strings.TrimSpace(name), strings.TrimSpace(value))
	}
	if key != nil {
		if err := reqsig.Sign(req, nil, *key, time.Now(), ""); err != nil {
			t.Fatalf("sign: %v", err)
		}
	}
	resp, err := k.Client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// The gateway serves the same API to tenants' agents, but only signed calls from the tenant's
// gateway origins; each accepted call yields exactly one billing.usage event. Refusals first.
func TestAgentGateway(t *testing.T) {
	f := newFixture(t, func(c *config.Config) { c.HTTP.GatewayAddr = "127.0.0.1:0" })
	k, admin := f.k, f.keys["ADMIN"]
	gw := "http://" + k.GatewayAddr()
	if k.GatewayAddr() == "" {
		t.Fatal("the gateway listener is not running")
	}
	key := newRequestKey(t, k, admin, nil)
	agent := newAgent(t, k, admin, "edge", map[string]string{"env": "edge"}, "")
	path := "/v1/agents/" + agent
	setOrigins := func(origins ...string) {
		t.Helper()
		if origins == nil {
			origins = []string{}
		}
		resp, body := k.Do(t, "PUT", "/v1/tenants/"+f.tenant+"/perimeter", map[string]any{"require_signatures": false, "gateway_origins": origins}, f.admin)
		mustStatus(t, resp, body, http.StatusOK)
	}

	// A tenant without gateway origins is not served by the gateway at all.
	resp, body := gatewayCall(t, k, gw, "GET", path, admin, &key)
	wantProblem(t, resp, body, http.StatusForbidden, "forbidden", "no gateway origins")

	// Origins that do not contain the client.
	setOrigins("10.0.0.0/8")
	kerneltest.WaitFor(t, 10*time.Second, "the new origins in force", func() bool {
		resp, body := gatewayCall(t, k, gw, "GET", path, admin, &key)
		return resp.StatusCode == http.StatusForbidden && strings.Contains(string(body), "not in this tenant")
	})

	setOrigins("127.0.0.0/8")
	kerneltest.WaitFor(t, 10*time.Second, "the loopback origin in force", func() bool {
		resp, _ := gatewayCall(t, k, gw, "GET", "/v1/auth/whoami", admin, nil)
		return resp.StatusCode == http.StatusUnauthorized
	})
	// Unsigned: refused on the gateway, served on the API listener (the tenant does not require
	// signatures there).
	resp, body = gatewayCall(t, k, gw, "GET", path, admin, nil)
	wantProblem(t, resp, body, http.StatusUnauthorized, "unauthenticated", "agent gateway requires RFC 9421 signatures")
	resp, body = k.Do(t, "GET", path, nil, admin)
	mustStatus(t, resp, body, http.StatusOK)
	// An operator above tenants, and unauthenticated routes other than probes, are not served.
	resp, body = gatewayCall(t, k, gw, "GET", "/v1/tenants", f.admin, nil)
	wantProblem(t, resp, body, http.StatusForbidden, "forbidden", "tenants' agents only")
	resp, body = gatewayCall(t, k, gw, "POST", "/v1/auth/token", "", nil)
	wantProblem(t, resp, body, http.StatusForbidden, "forbidden", "use the API listener")
	resp, body = gatewayCall(t, k, gw, "GET", "/health", "", nil)
	mustStatus(t, resp, body, http.StatusOK)

	// Signed calls from an allowed origin are served, and each is metered once.
	const calls = 3
	for range calls {
		resp, body = gatewayCall(t, k, gw, "GET", path, admin, &key)
		mustStatus(t, resp, body, http.StatusOK)
	}
	var usage []events.BillingUsage
	kerneltest.WaitFor(t, 20*time.Second, "the billing.usage events in the outbox", func() bool {
		usage = usage[:0]
		for _, ev := range publishedEvents(t, k) {
			if ev.Type != events.TypeBillingUsage {
				continue
			}
			var u events.BillingUsage
			if err := json.Unmarshal(ev.Data, &u); err != nil {
				t.Fatalf("billing.usage data: %v", err)
			}
			usage = append(usage, u)
		}
		return len(usage) >= calls
	})
	if len(usage) != calls {
		t.Fatalf("%d billing.usage events for %d accepted gateway calls (refused calls and the API listener's must yield none)", len(usage), calls)
	}
	for _, u := range usage {
		if u.Tenant != f.tenant || u.Source != events.UsageSourceGateway || u.Route != "GET /v1/agents/{agent_id}" || u.Status != http.StatusOK || u.ResponseBytes == 0 {
			t.Errorf("usage %+v: want tenant %s, source gateway, route GET /v1/agents/{agent_id}, status 200, response bytes > 0", u, f.tenant)
		}
	}
}
