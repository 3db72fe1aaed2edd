package control_test

import (
	"context"
	"testing"

	"github.com/nops-kernel/nops/internal/audit"
	"github.com/nops-kernel/nops/internal/control"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/policy"
	"github.com/nops-kernel/nops/internal/principal"
	"github.com/nops-kernel/nops/internal/tenant"
)

// withPolicies gives c a policy service and engine over the test's store, loaded once.
func withPolicies(t *testing.T, c *control.Control, st *faultyStore) *policy.Engine {
	t.Helper()
	e, err := policy.NewEngine(st, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	svc, err := policy.NewService(st, e, policy.ServiceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c.Policies = svc
	return e
}

// policyRecord returns the newest record of tree and checks the tree grew to size.
func policyRecord(t *testing.T, st *faultyStore, tree string, size int64) audit.Record {
	t.Helper()
	if got := treeSize(t, st, tree); got != size {
		t.Fatalf("tree %s holds %d records, want %d", tree, got, size)
	}
	entries, err := st.Records(t.Context(), tree, size-1, size, 1)
	if err != nil || len(entries) != 1 {
		t.Fatalf("records of %s: %v %v", tree, entries, err)
	}
	rec, err := entries[0].Record()
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func policyInput(tenantID, action string) policy.Input {
	return policy.Input{Principal: policy.Principal{Subject: "usr_x", Tenant: tenantID}, Action: action}
}

func TestPolicyUseCases(t *testing.T) {
	c, st, ctx := setup(t)
	if _, err := c.CreatePolicy(ctx, policy.CreateInput{}); errs.CodeOf(err) != errs.Unavailable {
		t.Fatalf("CreatePolicy without a policy service: %v, want unavailable", err)
	}
	e := withPolicies(t, c, st)
	ten, err := c.CreateTenant(ctx, tenant.CreateInput{Name: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	tenantCtx := principal.NewContext(ctx, principal.Principal{Subject: "usr_acme", Tenant: ten.ID, Roles: []string{"ADMIN"}})
	size := treeSize(t, st, ten.ID)

	// Refused first: a broken policy writes nothing, audit included.
	_, err = c.CreatePolicy(tenantCtx, policy.CreateInput{Spec: policy.Spec{Name: "bad", Effect: policy.EffectDeny, Expression: `principal.rolee == "x"`}})
	if e := errs.As(err); e == nil || e.Code != errs.Invalid || len(e.Fields) != 1 || e.Fields[0].Name != "body.expression" {
		t.Fatalf("CreatePolicy of a broken policy: %v", err)
	}
	if got := treeSize(t, st, ten.ID); got != size {
		t.Fatalf("a refused policy was audited: tree size %d -> %d", size, got)
	}

	p, err := c.CreatePolicy(tenantCtx, policy.CreateInput{Spec: policy.Spec{Name: "no deletes", Effect: policy.EffectDeny, Expression: `action == "agents.delete"`}})
	if err != nil {
		t.Fatal(err)
	}
	size++
	rec := policyRecord(t, st, ten.ID, size)
	if rec.Action != control.ActionPolicyCreate || rec.Resource != "policies/"+p.ID || rec.Actor.Principal != "usr_acme" || !rec.Decision.Allowed {
		t.Fatalf("audit record %+v", rec)
	}
	// In force on this replica at once: no waiting for the periodic refresh.
	if d := e.Evaluate(ctx, policyInput(ten.ID, "agents.delete")); d.Allowed || d.PolicyID != p.ID {
		t.Fatalf("decision after create: %+v", d)
	}

	upd, err := c.UpdatePolicy(tenantCtx, p.ID, p.ETag(), policy.Spec{Name: "no deletes", Effect: policy.EffectDeny, Expression: `action == "agents.update"`})
	if err != nil {
		t.Fatal(err)
	}
	size++
	if rec := policyRecord(t, st, ten.ID, size); rec.Action != control.ActionPolicyUpdate || rec.Resource != "policies/"+p.ID || rec.Decision.Reason != "allowed" {
		t.Fatalf("audit record %+v", rec)
	}
	if d := e.Evaluate(ctx, policyInput(ten.ID, "agents.delete")); !d.Allowed {
		t.Fatalf("decision after update: %+v", d)
	}
	if _, err := c.UpdatePolicy(tenantCtx, p.ID, upd.ETag(), policy.Spec{Name: "no deletes", Effect: policy.EffectDeny, Expression: `action == "agents.update"`}); err != nil {
		t.Fatal(err)
	}
	size++
	if rec := policyRecord(t, st, ten.ID, size); rec.Decision.Reason != "allowed: no change" {
		t.Fatalf("audit record of an unchanged update %+v", rec)
	}
	if _, err := c.UpdatePolicy(tenantCtx, p.ID, p.ETag(), policy.Spec{Name: "x", Effect: policy.EffectDeny, Expression: "true"}); errs.CodeOf(err) != errs.PreconditionFailed {
		t.Fatalf("update with a stale ETag: %v", err)
	}

	if err := c.DeletePolicy(tenantCtx, p.ID, ""); err != nil {
		t.Fatal(err)
	}
	size++
	if rec := policyRecord(t, st, ten.ID, size); rec.Action != control.ActionPolicyDelete || rec.Resource != "policies/"+p.ID {
		t.Fatalf("audit record %+v", rec)
	}
	if d := e.Evaluate(ctx, policyInput(ten.ID, "agents.update")); !d.Allowed {
		t.Fatalf("decision after delete: %+v", d)
	}

	// A global policy, by the super admin, goes to the global tree and applies to every tenant.
	globalSize := treeSize(t, st, audit.GlobalTree)
	g, err := c.CreatePolicy(ctx, policy.CreateInput{Spec: policy.Spec{Name: "global", Effect: policy.EffectDeny, Expression: `action == "tenants.delete"`}})
	if err != nil {
		t.Fatal(err)
	}
	if rec := policyRecord(t, st, audit.GlobalTree, globalSize+1); rec.Action != control.ActionPolicyCreate || rec.Resource != "policies/"+g.ID {
		t.Fatalf("audit record %+v", rec)
	}
	if d := e.Evaluate(context.Background(), policyInput(ten.ID, "tenants.delete")); d.Allowed || d.PolicyID != g.ID {
		t.Fatalf("decision under the global policy: %+v", d)
	}
}
