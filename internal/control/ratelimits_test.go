package control_test

import (
	"context"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/audit"
	"github.com/nops-kernel/nops/internal/control"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/ratelimit"
	"github.com/nops-kernel/nops/internal/tenant"
)

// rateLimitRecord returns the newest record of tree, failing unless the tree has want records.
func rateLimitRecord(t *testing.T, st *faultyStore, tree string, want int64) audit.Record {
	t.Helper()
	n := treeSize(t, st, tree)
	if n != want {
		t.Fatalf("tree %s has %d records, want %d", tree, n, want)
	}
	entries, err := st.Records(t.Context(), tree, n-1, n, 1)
	if err != nil || len(entries) != 1 {
		t.Fatalf("records of %s: %v %v", tree, entries, err)
	}
	rec, err := entries[0].Record()
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func TestRateLimitOverrideUseCases(t *testing.T) {
	c, st, ctx := setup(t)
	minute := ratelimit.OverrideInput{Kind: ratelimit.KindCIDR, Target: "10.0.0.0/8", Limit: 500, Period: time.Minute}

	// Refusals first: none leaves a change or an audit record behind.
	if _, err := c.PutRateLimitOverride(ctx, minute); errs.CodeOf(err) != errs.NotFound {
		t.Fatalf("Put without the feature = %v, want not found", err)
	}
	c.RateLimits = ratelimit.NewOverrides(st.Store, ratelimit.OverridesOptions{})
	bad := minute
	bad.Target = "10.0.0.1/8"
	if _, err := c.PutRateLimitOverride(ctx, bad); errs.CodeOf(err) != errs.Invalid {
		t.Fatalf("Put of an invalid override = %v, want invalid", err)
	}
	if err := c.DeleteRateLimitOverride(ctx, "rlo_01jz8y3w6v6r3b5q8x9k2m4n7a"); errs.CodeOf(err) != errs.NotFound {
		t.Fatalf("Delete of an unknown override = %v, want not found", err)
	}
	if n := treeSize(t, st, audit.GlobalTree); n != 0 {
		t.Fatalf("refused use cases left %d audit records", n)
	}

	o, err := c.PutRateLimitOverride(ctx, minute)
	if err != nil {
		t.Fatal(err)
	}
	rec := rateLimitRecord(t, st, audit.GlobalTree, 1)
	if rec.Action != control.ActionRateLimitOverridePut || rec.Resource != "rate-limits/"+o.ID || !rec.Decision.Allowed ||
		rec.Actor.Principal != "usr_test" || rec.Decision.Reason != "allowed: cidr 10.0.0.0/8 set to 500/1m0s" {
		t.Fatalf("audit record %+v", rec)
	}
	// The local cache follows at once.
	if got := c.RateLimits.Cached(); len(got) != 1 || got[0].ID != o.ID {
		t.Fatalf("Cached after Put = %+v", got)
	}

	if err := c.DeleteRateLimitOverride(ctx, o.ID); err != nil {
		t.Fatal(err)
	}
	rec = rateLimitRecord(t, st, audit.GlobalTree, 2)
	if rec.Action != control.ActionRateLimitOverrideDelete || rec.Resource != "rate-limits/"+o.ID || !rec.Decision.Allowed {
		t.Fatalf("audit record %+v", rec)
	}
	if got := c.RateLimits.Cached(); len(got) != 0 {
		t.Fatalf("Cached after Delete = %+v", got)
	}
}

// TestRecordBlock: the rate limiter's aggregated blocks become denied records in the right tree.
func TestRecordBlock(t *testing.T) {
	c, st, ctx := setup(t)
	ten, err := c.CreateTenant(ctx, tenant.CreateInput{Name: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	global := treeSize(t, st, audit.GlobalTree)
	// The auditor calls from its own goroutine with the first blocked request's values.
	reqCtx := control.WithRequest(context.WithoutCancel(t.Context()), control.Request{IP: "203.0.113.7", RequestID: "req_blocked"})
	c.RecordBlock(reqCtx, "", "ip:203.0.113.7", "per_ip", "rate limit ip:203.0.113.7 per_ip 100/1m0s exceeded")
	rec := rateLimitRecord(t, st, audit.GlobalTree, global+1)
	if rec.Action != control.ActionRateLimitBlock || rec.Resource != "rate-limit-keys/ip:203.0.113.7" || rec.Decision.Allowed ||
		rec.Decision.Reason != "rate limit ip:203.0.113.7 per_ip 100/1m0s exceeded" || rec.Actor.IP != "203.0.113.7" ||
		rec.Actor.RequestID != "req_blocked" || rec.Actor.Principal != "" {
		t.Fatalf("audit record %+v", rec)
	}
	c.RecordBlock(ctx, ten.ID, "tenant:"+ten.ID, "per_tenant", "rate limit tenant:"+ten.ID+" per_tenant 10/1s exceeded")
	rec = rateLimitRecord(t, st, ten.ID, 1)
	if rec.Action != control.ActionRateLimitBlock || rec.Resource != "rate-limit-keys/tenant:"+ten.ID || rec.Decision.Allowed {
		t.Fatalf("audit record %+v", rec)
	}
}
