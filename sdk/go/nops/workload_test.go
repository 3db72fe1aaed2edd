package nops_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
	"github.com/nops-kernel/nops/internal/spire/spiretest"
	"github.com/nops-kernel/nops/sdk/go/nops"
)

// TestWorkloadSVIDAgent runs a kernel on a SPIFFE Workload API (an in-process fake of a SPIRE
// agent) and an https agent taking its SVID from its own Workload API socket: the kernel invokes
// it over mTLS, keeps doing so after the Workload API pushes a new SVID, and the agent refuses to
// start on an SVID that is not its own.
func TestWorkloadSVIDAgent(t *testing.T) {
	ca := spiretest.NewCA(t, "spire.example")
	kernelAPI := spiretest.Start(t, ca.IssueSVID(t, ca.ID(t, "kernel", "node-1"), time.Hour), ca.Bundle())
	k := kerneltest.Start(t, func(c *config.Config) {
		c.Identity.SPIFFEEndpointSocket = kernelAPI.Addr()
		c.Identity.TrustDomain = ""
	})
	f := &fixture{k: k, super: "Authorization: Bearer " + k.Token(t, "")}
	resp, body := k.Do(t, "POST", "/v1/tenants", map[string]string{"name": "sdk"}, f.super)
	mustStatus(t, resp, body, http.StatusCreated)
	f.tenant = decode[struct {
		ID string `json:"id"`
	}](t, body).ID
	resp, body = k.Do(t, "POST", "/v1/api-keys?tenant="+f.tenant, map[string]any{"name": "sdk-admin", "role": "ADMIN"}, f.super)
	mustStatus(t, resp, body, http.StatusCreated)
	f.apiKey = decode[struct {
		Secret string `json:"secret"`
	}](t, body).Secret
	c := f.client(t, nops.Options{})

	newAgent := func(src nops.SVIDSource) *nops.Agent {
		a, err := nops.NewAgent(c, nops.AgentConfig{Name: "spire-agent", Version: "1.0.0", SVID: src,
			Capabilities: []nops.Capability{echoCapability(nil)}})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	// An SVID of another agent: the agent does not start, and leaves no registration behind.
	other := spiretest.Start(t, ca.IssueSVID(t, ca.ID(t, "tenant", f.tenant, "agent", "agt_other"), time.Hour), ca.Bundle())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := newAgent(nops.NewWorkloadSVIDs(other.Addr())).Run(ctx, listen(t)); err == nil || !strings.Contains(err.Error(), "is not agent") {
		t.Fatalf("run on another agent's SVID: %v", err)
	}
	resp, body = k.Do(t, "GET", "/v1/agents", nil, "X-API-Key: "+f.apiKey)
	mustStatus(t, resp, body, http.StatusOK)
	if strings.Contains(string(body), "spire-agent") {
		t.Fatalf("the refused agent stayed registered: %s", body)
	}

	// The agent's ID comes from a first registration (its SPIRE entry names it); Run registers
	// again under the same name and keeps it.
	id, err := newAgent(nil).Register(context.Background(), "http://127.0.0.1:9/")
	if err != nil {
		t.Fatal(err)
	}
	own := spiretest.Start(t, ca.IssueSVID(t, ca.ID(t, "tenant", f.tenant, "agent", id), time.Hour), ca.Bundle())
	src := nops.NewWorkloadSVIDs(own.Addr())
	a := newAgent(src)
	startAgent(t, a)
	if a.ID() != id {
		t.Fatalf("agent %s, want the registered %s", a.ID(), id)
	}
	kerneltest.WaitFor(t, 20*time.Second, "the agent's SVID", func() bool {
		_, _, err := src.Current()
		return err == nil
	})
	invoke := func() {
		t.Helper()
		res, err := c.Invoke(context.Background(), "echo", []byte(`{"message":"spire"}`), nil)
		if err != nil || string(res.Body) != `{"message":"spire"}` {
			t.Fatalf("invoke over mTLS: %+v %v", res, err)
		}
	}
	invoke()
	first, _, _ := src.Current()
	own.SetSVID(ca.IssueSVID(t, ca.ID(t, "tenant", f.tenant, "agent", id), time.Hour))
	kerneltest.WaitFor(t, 20*time.Second, "the pushed SVID", func() bool {
		cur, _, err := src.Current()
		return err == nil && cur.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) != 0
	})
	invoke()
}
