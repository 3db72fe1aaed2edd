package control_test

import (
	"net/netip"
	"testing"

	"github.com/nops-kernel/nops/internal/audit"
	"github.com/nops-kernel/nops/internal/control"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/perimeter"
	"github.com/nops-kernel/nops/internal/tenant"
)

func TestPutPerimeter(t *testing.T) {
	c, st, ctx := setup(t)
	ten, err := c.CreateTenant(ctx, tenant.CreateInput{Name: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	in := perimeter.Input{RequireSignatures: true, GatewayOrigins: []string{"203.0.113.0/24", "10.0.0.0/8"}}
	tree := audit.TreeFor(ten.ID)

	// Refusals first: none leaves a change or an audit record behind.
	if _, err := c.PutPerimeter(ctx, ten.ID, in, ""); errs.CodeOf(err) != errs.Unavailable {
		t.Fatalf("PutPerimeter without the feature = %v, want unavailable", err)
	}
	svc, err := perimeter.NewService(st.Store, perimeter.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c.Perimeter = svc
	bad := perimeter.Input{GatewayOrigins: []string{"10.0.0.1/8"}}
	if _, err := c.PutPerimeter(ctx, ten.ID, bad, ""); errs.CodeOf(err) != errs.Invalid {
		t.Fatalf("PutPerimeter of a bad origin = %v, want invalid", err)
	}
	if _, err := c.PutPerimeter(ctx, "ten_01jz8y3w6v6r3b5q8x9k2m4n7a", in, ""); errs.CodeOf(err) != errs.NotFound {
		t.Fatalf("PutPerimeter of an unknown tenant = %v, want not found", err)
	}
	if _, err := c.PutPerimeter(ctx, ten.ID, in, `"stale"`); errs.CodeOf(err) != errs.PreconditionFailed {
		t.Fatalf("PutPerimeter with a stale If-Match = %v, want precondition failed", err)
	}
	if n := treeSize(t, st, tree); n != 0 {
		t.Fatalf("refused use cases left %d audit records", n)
	}

	got, err := c.PutPerimeter(ctx, ten.ID, in, perimeter.Settings{TenantID: ten.ID}.ETag())
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != 1 || !got.RequireSignatures || len(got.GatewayOrigins) != 2 || got.GatewayOrigins[0] != netip.MustParsePrefix("10.0.0.0/8") {
		t.Fatalf("PutPerimeter = %+v", got)
	}
	rec := rateLimitRecord(t, st, tree, 1)
	if rec.Action != control.ActionTenantPerimeterUpdate || rec.Resource != "tenants/"+ten.ID+"/perimeter" || !rec.Decision.Allowed ||
		rec.Actor.Principal != "usr_test" || rec.Decision.Reason != "allowed: require_signatures=true, 2 gateway origins, version 1" {
		t.Fatalf("audit record %+v", rec)
	}
	// This replica's snapshot follows at once.
	if l := c.Perimeter.Lookup(ten.ID); !l.RequireSignatures || l.Version != 1 {
		t.Fatalf("Lookup after PutPerimeter = %+v", l)
	}

	// The same settings again: no write, audited as no change.
	again, err := c.PutPerimeter(ctx, ten.ID, in, got.ETag())
	if err != nil || again.Version != 1 {
		t.Fatalf("PutPerimeter unchanged = %+v, %v", again, err)
	}
	if rec := rateLimitRecord(t, st, tree, 2); rec.Decision.Reason != "allowed: no change" {
		t.Fatalf("audit record of no change %+v", rec)
	}
}
