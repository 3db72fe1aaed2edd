package routing_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/routing"
)

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 123456789, time.UTC)

// newService returns a service over a fake store of tenants A and B whose clock moves a second
// per reading.
func newService(t *testing.T, st *fakeStore, cache *routing.Cache) *routing.Service {
	t.Helper()
	now := t0
	svc, err := routing.NewService(st, routing.ServiceOptions{Cache: cache, Now: func() time.Time { now = now.Add(time.Second); return now }})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

func spec(targets ...routing.Target) routing.Spec { return routing.Spec{Targets: targets} }

func TestNewServiceNeedsAStore(t *testing.T) {
	if _, err := routing.NewService(nil, routing.ServiceOptions{}); err == nil {
		t.Fatal("NewService(nil) succeeded")
	}
}

func TestServicePutCreateReplaceNoChange(t *testing.T) {
	st := newFakeStore(tenantA, tenantB)
	svc := newService(t, st, nil)
	ctx := t.Context()

	ch, err := svc.Put(ctx, tenantA, "text.summarize", routing.Preconditions{}, routing.Spec{
		Targets: []routing.Target{{Version: "v1.2", Weight: 90}, {Version: "1.3", Weight: 10}}, StickyHeader: "x-user", Retryable: true,
	})
	if err != nil {
		t.Fatalf("Put (create): %v", err)
	}
	if !ch.Created || !ch.Changed || ch.Before != nil {
		t.Fatalf("create: %+v", ch)
	}
	created := ch.After
	want := routing.Route{
		TenantID: tenantA, Capability: "text.summarize",
		Targets:      []routing.Target{{Version: "1.2", Weight: 90}, {Version: "1.3", Weight: 10}},
		StickyHeader: "X-User", Retryable: true, Revision: 1,
		CreatedAt: created.CreatedAt, UpdatedAt: created.CreatedAt,
	}
	if diff := cmp.Diff(want, created); diff != "" {
		t.Fatalf("created (-want +got):\n%s", diff)
	}
	if created.CreatedAt.Location() != time.UTC || created.CreatedAt.Nanosecond()%1000 != 0 {
		t.Fatalf("CreatedAt %v is not UTC at microsecond precision", created.CreatedAt)
	}
	got, err := svc.Get(ctx, tenantA, "text.summarize")
	if err != nil || !cmp.Equal(got, created) {
		t.Fatalf("Get = %+v, %v; want %+v", got, err, created)
	}

	// The same spec (spelt differently) changes nothing.
	ch, err = svc.Put(ctx, tenantA, "text.summarize", routing.Preconditions{IfMatch: created.ETag()}, routing.Spec{
		Targets: []routing.Target{{Version: "1.2", Weight: 90}, {Version: "v1.3", Weight: 10}}, StickyHeader: "X-USER", Retryable: true,
	})
	if err != nil || ch.Changed || ch.Created || ch.After.Revision != 1 || ch.Before == nil {
		t.Fatalf("Put (same) = %+v, %v", ch, err)
	}

	// A replacement bumps the revision and keeps the creation time.
	ch, err = svc.Put(ctx, tenantA, "text.summarize", routing.Preconditions{IfMatch: created.ETag()}, routing.Spec{
		Targets: []routing.Target{{Version: "1.2", Weight: 50}, {Version: "1.3", Weight: 50}}, TimeoutMs: 2000, Hedge: &routing.Hedge{DelayMs: 200, MaxExtra: 1},
	})
	if err != nil {
		t.Fatalf("Put (replace): %v", err)
	}
	if !ch.Changed || ch.Created || ch.Before == nil || ch.Before.Revision != 1 || ch.After.Revision != 2 ||
		!ch.After.CreatedAt.Equal(created.CreatedAt) || !ch.After.UpdatedAt.After(created.UpdatedAt) ||
		ch.After.StickyHeader != "" || ch.After.Retryable || ch.After.Hedge == nil || ch.After.Timeout() != 2*time.Second {
		t.Fatalf("replace: %+v", ch)
	}
	// The stale tag no longer matches.
	_, err = svc.Put(ctx, tenantA, "text.summarize", routing.Preconditions{IfMatch: created.ETag()}, spec(routing.Target{Version: "1", Weight: 1}))
	wantCode(t, "Put with a stale If-Match", err, errs.PreconditionFailed)
	// If-None-Match: * creates only.
	_, err = svc.Put(ctx, tenantA, "text.summarize", routing.Preconditions{IfNoneMatch: "*"}, spec(routing.Target{Version: "1", Weight: 1}))
	wantCode(t, "Put with If-None-Match on an existing route", err, errs.PreconditionFailed)
	ch, err = svc.Put(ctx, tenantA, "text.translate", routing.Preconditions{IfNoneMatch: "*"}, spec(routing.Target{Version: "1", Weight: 1}))
	if err != nil || !ch.Created {
		t.Fatalf("Put with If-None-Match on a new route = %+v, %v", ch, err)
	}
	// If-Match on a route that does not exist.
	_, err = svc.Put(ctx, tenantA, "text.other", routing.Preconditions{IfMatch: "*"}, spec(routing.Target{Version: "1", Weight: 1}))
	wantCode(t, "Put with If-Match on no route", err, errs.PreconditionFailed)
}

func TestServicePutRefuses(t *testing.T) {
	st := newFakeStore(tenantA)
	svc := newService(t, st, nil)
	ctx := t.Context()
	good := spec(routing.Target{Version: "1", Weight: 1})
	_, err := svc.Put(ctx, "ten_bad", "c", routing.Preconditions{}, good)
	wantCode(t, "Put in a malformed tenant", err, errs.Invalid)
	_, err = svc.Put(ctx, tenantA, "Not A Capability", routing.Preconditions{}, good)
	if diff := cmp.Diff([]string{"path.capability"}, fieldNames(err)); diff != "" {
		t.Fatalf("Put of a bad capability: fields (-want +got):\n%s", diff)
	}
	_, err = svc.Put(ctx, tenantA, "c", routing.Preconditions{}, spec(routing.Target{Version: "1", Weight: -1}))
	if diff := cmp.Diff([]string{"body.targets[0].weight"}, fieldNames(err)); diff != "" {
		t.Fatalf("Put of a bad spec: fields (-want +got):\n%s", diff)
	}
	// A tenant the store does not know.
	_, err = svc.Put(ctx, tenantB, "c", routing.Preconditions{}, good)
	wantCode(t, "Put in an unknown tenant", err, errs.NotFound)
	if rs, _ := st.ListRoutes(ctx, tenantA, "", 10); len(rs) != 0 {
		t.Fatalf("refused puts stored %v", rs)
	}
}

func TestServiceTenantIsolation(t *testing.T) {
	st := newFakeStore(tenantA, tenantB)
	svc := newService(t, st, nil)
	ctx := t.Context()
	ch, err := svc.Put(ctx, tenantA, "c", routing.Preconditions{}, spec(routing.Target{Version: "1", Weight: 1}))
	if err != nil {
		t.Fatal(err)
	}
	_, err = svc.Get(ctx, tenantB, "c")
	wantCode(t, "another tenant's Get", err, errs.NotFound)
	_, err = svc.Delete(ctx, tenantB, "c", "")
	wantCode(t, "another tenant's Delete", err, errs.NotFound)
	// Another tenant's PUT with the first tenant's ETag creates nothing and changes nothing.
	_, err = svc.Put(ctx, tenantB, "c", routing.Preconditions{IfMatch: ch.After.ETag()}, spec(routing.Target{Version: "2", Weight: 1}))
	wantCode(t, "another tenant's conditional Put", err, errs.PreconditionFailed)
	page, err := svc.List(ctx, tenantB, routing.ListInput{})
	if err != nil || len(page.Routes) != 0 {
		t.Fatalf("tenant B's list = %+v, %v", page, err)
	}
	if got, _ := svc.Get(ctx, tenantA, "c"); got.Revision != 1 || got.Targets[0].Version != "1" {
		t.Fatalf("tenant A's route after B's attempts: %+v", got)
	}
	// A store returning a row of another tenant (an adapter bug) leaks nothing.
	bad := ch.After
	bad.TenantID = tenantB
	st.set(bad)
	if _, err := svc.Get(ctx, tenantA, "x"); !errs.Is(err, errs.NotFound) {
		t.Fatalf("Get of a missing route: %v", err)
	}
}

func TestServiceGetRefuses(t *testing.T) {
	svc := newService(t, newFakeStore(tenantA), nil)
	_, err := svc.Get(t.Context(), tenantA, "../etc")
	wantCode(t, "Get of a bad capability", err, errs.NotFound)
	_, err = svc.Get(t.Context(), "", "c")
	wantCode(t, "Get without a tenant", err, errs.Invalid)
}

func TestServiceList(t *testing.T) {
	st := newFakeStore(tenantA, tenantB)
	svc := newService(t, st, nil)
	ctx := t.Context()
	var want []string
	for _, c := range []string{"d.x", "a.x", "c.x", "b.x", "e.x"} {
		if _, err := svc.Put(ctx, tenantA, c, routing.Preconditions{}, spec(routing.Target{Version: "1", Weight: 1})); err != nil {
			t.Fatal(err)
		}
	}
	want = []string{"a.x", "b.x", "c.x", "d.x", "e.x"}
	if _, err := svc.Put(ctx, tenantB, "b.y", routing.Preconditions{}, spec(routing.Target{Version: "1", Weight: 1})); err != nil {
		t.Fatal(err)
	}
	var got []string
	cursor := ""
	for range 10 {
		page, err := svc.List(ctx, tenantA, routing.ListInput{Cursor: cursor, Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range page.Routes {
			got = append(got, r.Capability)
		}
		if page.NextCursor == "" {
			break
		}
		cursor = page.NextCursor
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("paged list (-want +got):\n%s", diff)
	}
	page, err := svc.List(ctx, tenantA, routing.ListInput{Limit: 5})
	if err != nil || len(page.Routes) != 5 || page.NextCursor != "" {
		t.Fatalf("an exact last page: %d routes, cursor %q, %v", len(page.Routes), page.NextCursor, err)
	}
	_, err = svc.List(ctx, tenantA, routing.ListInput{Cursor: "not a cursor!"})
	if diff := cmp.Diff([]string{"query.cursor"}, fieldNames(err)); diff != "" {
		t.Fatalf("bad cursor (-want +got):\n%s", diff)
	}
	for _, limit := range []int{-1, routing.MaxListLimit + 1} {
		_, err = svc.List(ctx, tenantA, routing.ListInput{Limit: limit})
		if diff := cmp.Diff([]string{"query.limit"}, fieldNames(err)); diff != "" {
			t.Fatalf("limit %d (-want +got):\n%s", limit, diff)
		}
	}
}

func TestServiceDelete(t *testing.T) {
	st := newFakeStore(tenantA)
	svc := newService(t, st, nil)
	ctx := t.Context()
	ch, err := svc.Put(ctx, tenantA, "c", routing.Preconditions{}, spec(routing.Target{Version: "1", Weight: 1}))
	if err != nil {
		t.Fatal(err)
	}
	ch2, err := svc.Put(ctx, tenantA, "c", routing.Preconditions{}, spec(routing.Target{Version: "2", Weight: 1}))
	if err != nil {
		t.Fatal(err)
	}
	_, err = svc.Delete(ctx, tenantA, "c", ch.After.ETag())
	wantCode(t, "Delete with a stale If-Match", err, errs.PreconditionFailed)
	gone, err := svc.Delete(ctx, tenantA, "c", ch2.After.ETag())
	if err != nil || !cmp.Equal(gone, ch2.After) {
		t.Fatalf("Delete = %+v, %v; want %+v", gone, err, ch2.After)
	}
	_, err = svc.Delete(ctx, tenantA, "c", "")
	wantCode(t, "Delete again", err, errs.NotFound)
	_, err = svc.Delete(ctx, tenantA, "C!", "")
	wantCode(t, "Delete of a bad capability", err, errs.NotFound)
}

// A write that lands between the service's read and its compare-and-set: without a condition the
// service reads again and wins; with one it reports the precondition failed.
func TestServiceRaces(t *testing.T) {
	ctx := t.Context()
	other := routing.Route{TenantID: tenantA, Capability: "c", Targets: []routing.Target{{Version: "9", Weight: 1}}, Revision: 5, CreatedAt: t0, UpdatedAt: t0}

	t.Run("unconditional put over a concurrent create", func(t *testing.T) {
		st := newFakeStore(tenantA)
		svc := newService(t, st, nil)
		once := true
		st.beforeWrite = func() {
			if once {
				once = false
				st.set(other)
			}
		}
		ch, err := svc.Put(ctx, tenantA, "c", routing.Preconditions{}, spec(routing.Target{Version: "1", Weight: 1}))
		if err != nil || ch.Created || ch.After.Revision != 6 || ch.Before == nil || ch.Before.Revision != 5 {
			t.Fatalf("Put = %+v, %v", ch, err)
		}
	})
	t.Run("unconditional put over a concurrent delete", func(t *testing.T) {
		st := newFakeStore(tenantA)
		st.set(other)
		svc := newService(t, st, nil)
		once := true
		st.beforeWrite = func() {
			if once {
				once = false
				st.remove(tenantA, "c")
			}
		}
		ch, err := svc.Put(ctx, tenantA, "c", routing.Preconditions{}, spec(routing.Target{Version: "1", Weight: 1}))
		if err != nil || !ch.Created || ch.After.Revision != 1 {
			t.Fatalf("Put = %+v, %v", ch, err)
		}
	})
	t.Run("conditional put loses", func(t *testing.T) {
		st := newFakeStore(tenantA)
		st.set(other)
		svc := newService(t, st, nil)
		st.beforeWrite = func() {
			bumped := other
			bumped.Revision = 6
			st.set(bumped)
		}
		_, err := svc.Put(ctx, tenantA, "c", routing.Preconditions{IfMatch: other.ETag()}, spec(routing.Target{Version: "1", Weight: 1}))
		wantCode(t, "conditional Put after a concurrent change", err, errs.PreconditionFailed)
		if !errors.Is(err, routing.ErrRevisionConflict) {
			t.Fatalf("%v does not wrap ErrRevisionConflict", err)
		}
	})
	t.Run("a route that keeps changing", func(t *testing.T) {
		st := newFakeStore(tenantA)
		st.set(other)
		svc := newService(t, st, nil)
		rev := other.Revision
		st.beforeWrite = func() {
			rev++
			bumped := other
			bumped.Revision = rev
			st.set(bumped)
		}
		_, err := svc.Put(ctx, tenantA, "c", routing.Preconditions{}, spec(routing.Target{Version: "1", Weight: 1}))
		wantCode(t, "Put of a route that keeps changing", err, errs.Conflict)
		_, err = svc.Delete(ctx, tenantA, "c", "")
		wantCode(t, "Delete of a route that keeps changing", err, errs.Conflict)
	})
	t.Run("unconditional delete retries", func(t *testing.T) {
		st := newFakeStore(tenantA)
		st.set(other)
		svc := newService(t, st, nil)
		once := true
		st.beforeWrite = func() {
			if once {
				once = false
				bumped := other
				bumped.Revision = 6
				st.set(bumped)
			}
		}
		gone, err := svc.Delete(ctx, tenantA, "c", "")
		if err != nil || gone.Revision != 6 {
			t.Fatalf("Delete = %+v, %v", gone, err)
		}
	})
	t.Run("store failure", func(t *testing.T) {
		st := newFakeStore(tenantA)
		st.readErr = fmt.Errorf("disk on fire")
		svc := newService(t, st, nil)
		_, err := svc.Put(ctx, tenantA, "c", routing.Preconditions{}, spec(routing.Target{Version: "1", Weight: 1}))
		if err == nil || errs.CodeOf(err) == errs.NotFound {
			t.Fatalf("Put over a failing store = %v", err)
		}
	})
}

func TestServiceInvalidatesItsCache(t *testing.T) {
	st := newFakeStore(tenantA)
	cache := routing.NewCache(st, time.Hour, routing.CacheOptions{})
	svc := newService(t, st, cache)
	if svc.Cache() != cache {
		t.Fatal("Cache() is not the cache given")
	}
	ctx := t.Context()
	if r, err := cache.Get(ctx, tenantA, "c"); r != nil || err != nil {
		t.Fatalf("Get before any route = %v, %v", r, err)
	}
	if _, err := svc.Put(ctx, tenantA, "c", routing.Preconditions{}, spec(routing.Target{Version: "1", Weight: 1})); err != nil {
		t.Fatal(err)
	}
	if r, _ := cache.Get(ctx, tenantA, "c"); r != nil {
		t.Fatal("the cache saw the write before Invalidate: the test proves nothing")
	}
	svc.Invalidate(tenantA, "c")
	if r, err := cache.Get(ctx, tenantA, "c"); r == nil || err != nil {
		t.Fatalf("Get after Invalidate = %v, %v", r, err)
	}
	// Without a cache, Invalidate is a no-op.
	newService(t, st, nil).Invalidate(tenantA, "c")
}
