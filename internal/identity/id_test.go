package identity_test

import (
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nops-kernel/nops/internal/identity"
)

func TestSPIFFEIDs(t *testing.T) {
	td, err := identity.ParseTrustDomain("spiffe://nops.test")
	if err != nil || td.Name() != "nops.test" {
		t.Fatalf("ParseTrustDomain = %v, %v", td, err)
	}
	agent, err := identity.AgentID(td, "ten_01jz", "agt_01jz")
	if err != nil || agent.String() != "spiffe://nops.test/tenant/ten_01jz/agent/agt_01jz" {
		t.Fatalf("AgentID = %v, %v", agent, err)
	}
	tenant, id, err := identity.ParseAgentID(td, agent)
	if err != nil || tenant != "ten_01jz" || id != "agt_01jz" {
		t.Fatalf("ParseAgentID = %q, %q, %v", tenant, id, err)
	}
	kernel, err := identity.KernelID(td, "node-1")
	if err != nil || kernel.String() != "spiffe://nops.test/kernel/node-1" {
		t.Fatalf("KernelID = %v, %v", kernel, err)
	}
	for _, bad := range []struct{ tenant, agent string }{{"", "agt"}, {"ten", ""}, {"ten/x", "agt"}, {"ten", "agt x"}, {"..", "agt"}} {
		if id, err := identity.AgentID(td, bad.tenant, bad.agent); err == nil {
			t.Errorf("AgentID(%q, %q) = %s, want an error", bad.tenant, bad.agent, id)
		}
	}
	if _, err := identity.KernelID(td, ""); err == nil {
		t.Error("KernelID with an empty node succeeded")
	}
	for _, s := range []string{
		"spiffe://other.test/tenant/ten_a/agent/agt_a",
		"spiffe://nops.test/kernel/node-1",
		"spiffe://nops.test/tenant/ten_a",
		"spiffe://nops.test/tenant/ten_a/agent/agt_a/extra",
		"spiffe://nops.test/tenants/ten_a/agent/agt_a",
		"spiffe://nops.test",
	} {
		if tn, ag, err := identity.ParseAgentID(td, spiffeid.RequireFromString(s)); err == nil {
			t.Errorf("ParseAgentID(%s) = %q, %q, want an error", s, tn, ag)
		}
	}
}
