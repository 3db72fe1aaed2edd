package control_test

import (
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/control"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/events"
	"github.com/nops-kernel/nops/internal/routing"
	"github.com/nops-kernel/nops/internal/tenant"
)

// withRoutes gives c a routing service over the test's store, with a cache that would hold a
// read for an hour: only Invalidate can make it see a change.
func withRoutes(t *testing.T, c *control.Control, st *faultyStore) *routing.Cache {
	t.Helper()
	cache := routing.NewCache(st, time.Hour, routing.CacheOptions{})
	svc, err := routing.NewService(st, routing.ServiceOptions{Cache: cache})
	if err != nil {
		t.Fatal(err)
	}
	c.Routes = svc
	return cache
}

func TestRouteUseCases(t *testing.T) {
	c, st, ctx := setup(t)
	spec := routing.Spec{Targets: []routing.Target{{Version: "1", Weight: 1}}}
	if _, err := c.PutRoute(ctx, "ten_x", "c", routing.Preconditions{}, spec); errs.CodeOf(err) != errs.Unavailable {
		t.Fatalf("PutRoute without a routing service: %v, want unavailable", err)
	}
	if err := c.DeleteRoute(ctx, "ten_x", "c", ""); errs.CodeOf(err) != errs.Unavailable {
		t.Fatalf("DeleteRoute without a routing service: %v, want unavailable", err)
	}
	cache := withRoutes(t, c, st)
	ten, err := c.CreateTenant(ctx, tenant.CreateInput{Name: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	drain(t, st)
	if r, err := cache.Get(ctx, ten.ID, "text.summarize"); r != nil || err != nil {
		t.Fatalf("cache before any route: %v, %v", r, err)
	}

	// Refused first: nothing is written, audit included.
	_, err = c.PutRoute(ctx, ten.ID, "text.summarize", routing.Preconditions{}, routing.Spec{Targets: []routing.Target{{Version: "1", Weight: -1}}})
	if errs.CodeOf(err) != errs.Invalid {
		t.Fatalf("PutRoute of a bad spec: %v", err)
	}
	if n := treeSize(t, st, ten.ID); n != 0 {
		t.Fatalf("a refused route was audited: %d records", n)
	}

	// Create: route.create, nops.route.updated.v1, and this replica's cache sees it at once.
	ch, err := c.PutRoute(ctx, ten.ID, "text.summarize", routing.Preconditions{IfNoneMatch: "*"}, spec)
	if err != nil || !ch.Created {
		t.Fatalf("PutRoute (create) = %+v, %v", ch, err)
	}
	rec := policyRecord(t, st, ten.ID, 1)
	if rec.Action != control.ActionRouteCreate || rec.Resource != "routes/text.summarize" || !rec.Decision.Allowed || rec.Actor.Principal != "usr_test" {
		t.Fatalf("audit record %+v", rec)
	}
	ev := onlyEvent(t, st, events.TypeRouteUpdated)
	if ev.Subject != "routes/text.summarize" || ev.Tenant != ten.ID {
		t.Fatalf("event %+v", ev)
	}
	if r, _ := cache.Get(ctx, ten.ID, "text.summarize"); r == nil || r.Revision != 1 {
		t.Fatalf("this replica's cache after the create: %v", r)
	}

	// The same spec again: audited as no change, no event, no new revision.
	if ch, err = c.PutRoute(ctx, ten.ID, "text.summarize", routing.Preconditions{}, spec); err != nil || ch.Changed {
		t.Fatalf("PutRoute (same) = %+v, %v", ch, err)
	}
	if rec := policyRecord(t, st, ten.ID, 2); rec.Action != control.ActionRouteUpdate || rec.Decision.Reason != "allowed: no change" {
		t.Fatalf("audit record of an unchanged route %+v", rec)
	}
	drain(t, st)

	// Replace: route.update, an event carrying the new state, the cache invalidated.
	spec.Targets[0].Weight, spec.Retryable = 5, true
	if ch, err = c.PutRoute(ctx, ten.ID, "text.summarize", routing.Preconditions{IfMatch: ch.After.ETag()}, spec); err != nil || ch.After.Revision != 2 {
		t.Fatalf("PutRoute (replace) = %+v, %v", ch, err)
	}
	if rec := policyRecord(t, st, ten.ID, 3); rec.Action != control.ActionRouteUpdate || rec.Decision.Reason != "allowed" {
		t.Fatalf("audit record of a replacement %+v", rec)
	}
	p, err := onlyEvent(t, st, events.TypeRouteUpdated).Payload()
	if err != nil {
		t.Fatal(err)
	}
	if got := p.(events.RouteUpdated).Route; got.Revision != 2 || !got.Retryable || got.Targets[0].Weight != 5 {
		t.Fatalf("event data %+v", got)
	}
	if r, _ := cache.Get(ctx, ten.ID, "text.summarize"); r == nil || r.Revision != 2 {
		t.Fatalf("this replica's cache after the replacement: %v", r)
	}

	// A stale ETag: refused, nothing recorded.
	if _, err := c.PutRoute(ctx, ten.ID, "text.summarize", routing.Preconditions{IfMatch: `"stale"`}, spec); errs.CodeOf(err) != errs.PreconditionFailed {
		t.Fatalf("PutRoute with a stale If-Match: %v", err)
	}
	if err := c.DeleteRoute(ctx, ten.ID, "text.summarize", `"stale"`); errs.CodeOf(err) != errs.PreconditionFailed {
		t.Fatalf("DeleteRoute with a stale If-Match: %v", err)
	}
	if n := treeSize(t, st, ten.ID); n != 3 {
		t.Fatalf("refused writes were audited: %d records", n)
	}

	// Delete: route.delete, nops.route.deleted.v1 with the last state, the cache invalidated.
	if err := c.DeleteRoute(ctx, ten.ID, "text.summarize", ""); err != nil {
		t.Fatal(err)
	}
	if rec := policyRecord(t, st, ten.ID, 4); rec.Action != control.ActionRouteDelete || rec.Resource != "routes/text.summarize" {
		t.Fatalf("audit record of the deletion %+v", rec)
	}
	p, err = onlyEvent(t, st, events.TypeRouteDeleted).Payload()
	if err != nil {
		t.Fatal(err)
	}
	if got := p.(events.RouteDeleted); got.Route.Revision != 2 || got.DeletedAt.IsZero() {
		t.Fatalf("deletion event data %+v", got)
	}
	if r, _ := cache.Get(ctx, ten.ID, "text.summarize"); r != nil {
		t.Fatalf("this replica's cache after the deletion: %v", r)
	}
	if err := c.DeleteRoute(ctx, ten.ID, "text.summarize", ""); errs.CodeOf(err) != errs.NotFound {
		t.Fatalf("DeleteRoute again: %v", err)
	}
}

// TestRouteRollsBackWithItsEvent: a route whose event cannot be written is not stored.
func TestRouteRollsBackWithItsEvent(t *testing.T) {
	c, st, ctx := setup(t)
	withRoutes(t, c, st)
	ten, err := c.CreateTenant(ctx, tenant.CreateInput{Name: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	st.failOutbox = true
	if _, err := c.PutRoute(ctx, ten.ID, "c", routing.Preconditions{}, routing.Spec{Targets: []routing.Target{{Version: "1", Weight: 1}}}); err == nil {
		t.Fatal("PutRoute succeeded although its event could not be written")
	}
	st.failOutbox = false
	if _, err := c.Routes.Get(ctx, ten.ID, "c"); errs.CodeOf(err) != errs.NotFound {
		t.Fatalf("the route survived the failed transaction: %v", err)
	}
}

// drain marks every pending outbox record published.
func drain(t *testing.T, st *faultyStore) {
	t.Helper()
	pending, err := st.PendingOutbox(t.Context(), 100)
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, 0, len(pending))
	for _, r := range pending {
		ids = append(ids, r.ID)
	}
	if err := st.MarkPublished(t.Context(), ids, time.Now()); err != nil {
		t.Fatal(err)
	}
}

// onlyEvent returns the one pending event, which must be of type typ, and drains the outbox.
func onlyEvent(t *testing.T, st *faultyStore, typ events.Type) events.Event {
	t.Helper()
	pending, err := st.PendingOutbox(t.Context(), 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(pending) != 1 || pending[0].Type != typ {
		t.Fatalf("outbox %+v, want one %s", pending, typ)
	}
	ev, err := events.Parse(pending[0].Payload)
	if err != nil {
		t.Fatal(err)
	}
	drain(t, st)
	return ev
}
