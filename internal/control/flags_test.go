package control_test

import (
	"context"
	"testing"

	"github.com/nops-kernel/nops/internal/audit"
	"github.com/nops-kernel/nops/internal/control"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/events"
	"github.com/nops-kernel/nops/internal/flags"
)

func TestFlagUseCases(t *testing.T) {
	c, st, ctx := setup(t)
	spec := flags.Spec{Type: flags.TypeBoolean, DefaultVariant: "false", Enabled: true,
		Rules: []flags.Rule{{Expression: `tenant.name == "acme"`, Variant: "true"}}}
	if _, err := c.PutFlag(ctx, "f", flags.Preconditions{}, spec); errs.CodeOf(err) != errs.Unavailable {
		t.Fatalf("PutFlag without a flags service: %v, want unavailable", err)
	}
	if err := c.DeleteFlag(ctx, "f", ""); errs.CodeOf(err) != errs.Unavailable {
		t.Fatalf("DeleteFlag without a flags service: %v, want unavailable", err)
	}
	svc, err := flags.NewService(st, flags.ServiceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c.Flags = svc
	notified := 0
	c.FlagsChanged = func(context.Context) { notified++ }
	drain(t, st)
	global := audit.TreeFor("")
	before := treeSize(t, st, global)

	// Refused: nothing written, nothing audited, nobody told.
	bad := spec
	bad.Rules = []flags.Rule{{Expression: "tenant.name ==", Variant: "true"}}
	if _, err := c.PutFlag(ctx, "f", flags.Preconditions{}, bad); errs.CodeOf(err) != errs.Invalid {
		t.Fatalf("PutFlag of bad CEL: %v", err)
	}
	if n := treeSize(t, st, global); n != before || notified != 0 {
		t.Fatalf("a refused flag was audited (%d → %d) or notified (%d)", before, n, notified)
	}

	// Create: flag.create in the global tree, nops.flag.changed.v1 with the kernel tenant.
	ch, err := c.PutFlag(ctx, "f", flags.Preconditions{IfNoneMatch: "*"}, spec)
	if err != nil || !ch.Created || ch.After.Revision != 1 {
		t.Fatalf("PutFlag (create) = %+v, %v", ch, err)
	}
	rec := policyRecord(t, st, global, before+1)
	if rec.Action != control.ActionFlagCreate || rec.Resource != "flags/f" || !rec.Decision.Allowed || rec.Actor.Principal != "usr_test" {
		t.Fatalf("audit record %+v", rec)
	}
	ev := onlyEvent(t, st, events.TypeFlagChanged)
	if ev.Subject != "flags/f" || ev.Tenant != events.KernelTenant {
		t.Fatalf("event %+v", ev)
	}
	drain(t, st)
	if notified != 1 {
		t.Fatalf("FlagsChanged called %d times after the create", notified)
	}

	// Unchanged: audited as no change, no event, no notification.
	if ch, err = c.PutFlag(ctx, "f", flags.Preconditions{}, spec); err != nil || ch.Changed {
		t.Fatalf("PutFlag (same) = %+v, %v", ch, err)
	}
	if rec := policyRecord(t, st, global, before+2); rec.Action != control.ActionFlagUpdate || rec.Decision.Reason != "allowed: no change" {
		t.Fatalf("audit record of an unchanged flag %+v", rec)
	}
	if pending, _ := st.PendingOutbox(ctx, 10); len(pending) != 0 || notified != 1 {
		t.Fatalf("an unchanged flag produced %d events, %d notifications", len(pending), notified)
	}

	// Update with a stale ETag: 412, nothing written.
	old := ch.After.ETag()
	spec.Enabled = false
	if ch, err = c.PutFlag(ctx, "f", flags.Preconditions{IfMatch: old}, spec); err != nil || ch.After.Revision != 2 {
		t.Fatalf("PutFlag (update) = %+v, %v", ch, err)
	}
	drain(t, st)
	if _, err := c.PutFlag(ctx, "f", flags.Preconditions{IfMatch: old}, spec); errs.CodeOf(err) != errs.PreconditionFailed {
		t.Fatalf("PutFlag with a stale If-Match: %v", err)
	}

	// Delete: flag.delete and a deleted event.
	if err := c.DeleteFlag(ctx, "f", ""); err != nil {
		t.Fatal(err)
	}
	if rec := policyRecord(t, st, global, before+4); rec.Action != control.ActionFlagDelete {
		t.Fatalf("audit record of the delete %+v", rec)
	}
	ev = onlyEvent(t, st, events.TypeFlagChanged)
	p, err := ev.Payload()
	if err != nil {
		t.Fatal(err)
	}
	if fc := p.(events.FlagChanged); fc.Change != events.FlagDeleted || fc.Revision != 2 {
		t.Fatalf("delete event %+v", fc)
	}
	if err := c.DeleteFlag(ctx, "f", ""); errs.CodeOf(err) != errs.NotFound {
		t.Fatalf("DeleteFlag of a missing flag: %v", err)
	}
	if notified != 3 {
		t.Fatalf("FlagsChanged called %d times, want 3", notified)
	}
}
