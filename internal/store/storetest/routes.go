package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/routing"
	"github.com/nops-kernel/nops/internal/tenant"
)

// RouteStore is what RunRoutes needs: the route store, the tenant store (routes belong to tenants
// and go with them) and InTx.
type RouteStore interface {
	routing.Store
	tenant.Store
	InTx(ctx context.Context, fn func(ctx context.Context) error) error
}

// RunRoutes runs the routing.Store suite. open must return a fresh store with every migration
// applied, on a database no other test uses, and close it through t.Cleanup.
func RunRoutes(t *testing.T, open func(t *testing.T) RouteStore) {
	t.Run("round trip", func(t *testing.T) { t.Parallel(); testRouteRoundTrip(t, open) })
	t.Run("create errors", func(t *testing.T) { t.Parallel(); testRouteCreateErrors(t, open) })
	t.Run("list order, paging and tenant isolation", func(t *testing.T) { t.Parallel(); testRouteList(t, open) })
	t.Run("update compare-and-set", func(t *testing.T) { t.Parallel(); testRouteUpdate(t, open) })
	t.Run("delete compare-and-set", func(t *testing.T) { t.Parallel(); testRouteDelete(t, open) })
	t.Run("a tenant's deletion takes its routes", func(t *testing.T) { t.Parallel(); testRouteTenantDeleted(t, open) })
	t.Run("concurrent updates lose none", func(t *testing.T) { t.Parallel(); testRouteConcurrentUpdates(t, open) })
	t.Run("transactions", func(t *testing.T) { t.Parallel(); testRouteTransactions(t, open) })
}

// routeStore is a store with tenants ten_a and ten_b.
func routeStore(t *testing.T, open func(t *testing.T) RouteStore) RouteStore {
	t.Helper()
	s := open(t)
	for _, tn := range []tenant.Tenant{domTenant("ten_a", "a", base), domTenant("ten_b", "b", base)} {
		if err := s.CreateTenant(t.Context(), tn); err != nil {
			t.Fatalf("CreateTenant(%s): %v", tn.ID, err)
		}
	}
	return s
}

// rt returns a minimal route of the tenant at revision 1.
func rt(tenantID, capability string) routing.Route {
	return routing.Route{
		TenantID: tenantID, Capability: capability, Targets: []routing.Target{{Version: "1", Weight: 1}},
		Revision: 1, CreatedAt: base, UpdatedAt: base,
	}
}

// storedRoute is what an adapter returns for r: times in UTC at microsecond precision.
func storedRoute(r routing.Route) routing.Route {
	r.CreatedAt, r.UpdatedAt = stored(r.CreatedAt), stored(r.UpdatedAt)
	return r
}

func rtCreate(t *testing.T, s RouteStore, rs ...routing.Route) {
	t.Helper()
	for _, r := range rs {
		if err := s.CreateRoute(t.Context(), r); err != nil {
			t.Fatalf("CreateRoute(%s, %s): %v", r.TenantID, r.Capability, err)
		}
	}
}

func rtGet(t *testing.T, s RouteStore, tenantID, capability string) routing.Route {
	t.Helper()
	r, err := s.Route(t.Context(), tenantID, capability)
	if err != nil {
		t.Fatalf("Route(%s, %s): %v", tenantID, capability, err)
	}
	return r
}

// rtCode fails unless err carries code; a conflict must wrap routing.ErrRevisionConflict.
func rtCode(t *testing.T, what string, err error, code errs.Code) {
	t.Helper()
	if got := errs.CodeOf(err); got != code {
		t.Fatalf("%s: error %v (code %q), want code %q", what, err, got, code)
	}
	if code == errs.Conflict && !errors.Is(err, routing.ErrRevisionConflict) {
		t.Fatalf("%s: %v does not wrap routing.ErrRevisionConflict", what, err)
	}
}

func testRouteRoundTrip(t *testing.T, open func(t *testing.T) RouteStore) {
	s := routeStore(t, open)
	full := routing.Route{
		TenantID: "ten_a", Capability: "text.summarize",
		Targets: []routing.Target{
			{AgentID: "agt_01jz0000000000000000000001", Weight: 0},
			{Version: "1.2", Weight: 90},
			{Version: "1.3.0-rc.1", Weight: 10, Priority: 0},
			{Version: "2", Weight: 10000, Priority: 15},
		},
		StickyHeader: "X-Session-Id", TimeoutMs: 600000, Retryable: true,
		Hedge:    &routing.Hedge{DelayMs: 150, MaxExtra: 2},
		Revision: 7, CreatedAt: base, UpdatedAt: base.Add(time.Hour),
	}
	minimal := rt("ten_a", "a")
	other := rt("ten_b", "text.summarize") // the same capability in another tenant
	other.Targets = []routing.Target{{AgentID: "agt_01jz0000000000000000000009", Weight: 3, Priority: 2}}
	rtCreate(t, s, full, minimal, other)
	for _, want := range []routing.Route{full, minimal, other} {
		got := rtGet(t, s, want.TenantID, want.Capability)
		if diff := cmp.Diff(storedRoute(want), got); diff != "" {
			t.Errorf("Route(%s, %s) (-want +got):\n%s", want.TenantID, want.Capability, diff)
		}
		checkUTC(t, want.Capability+" CreatedAt", got.CreatedAt)
		checkUTC(t, want.Capability+" UpdatedAt", got.UpdatedAt)
	}
	for _, key := range [][2]string{{"ten_a", "missing"}, {"ten_b", "a"}, {"ten_nobody", "a"}} {
		_, err := s.Route(t.Context(), key[0], key[1])
		rtCode(t, fmt.Sprintf("Route(%s, %s)", key[0], key[1]), err, errs.NotFound)
	}
}

func testRouteCreateErrors(t *testing.T, open func(t *testing.T) RouteStore) {
	s := routeStore(t, open)
	rtCreate(t, s, rt("ten_a", "c"))
	dup := rt("ten_a", "c")
	dup.Targets, dup.Revision = []routing.Target{{Version: "9", Weight: 9}}, 9
	rtCode(t, "CreateRoute of an existing key", s.CreateRoute(t.Context(), dup), errs.Conflict)
	rtCode(t, "CreateRoute in an unknown tenant", s.CreateRoute(t.Context(), rt("ten_nobody", "c")), errs.NotFound)
	if got := rtGet(t, s, "ten_a", "c"); got.Revision != 1 || got.Targets[0].Version != "1" {
		t.Fatalf("a refused create changed the route: %+v", got)
	}
	// A create that finds the route must not end the caller's transaction: the service reads
	// again and replaces it in the same one.
	err := s.InTx(t.Context(), func(ctx context.Context) error {
		if err := s.CreateRoute(ctx, dup); !errors.Is(err, routing.ErrRevisionConflict) {
			return fmt.Errorf("create route in a transaction: %v, want a revision conflict", err)
		}
		cur, err := s.Route(ctx, "ten_a", "c")
		if err != nil {
			return fmt.Errorf("read route after a conflicting create: %w", err)
		}
		next := dup
		next.Revision, next.CreatedAt = cur.Revision+1, cur.CreatedAt
		return s.UpdateRoute(ctx, next, cur.Revision)
	})
	if err != nil {
		t.Fatalf("InTx: %v", err)
	}
	if got := rtGet(t, s, "ten_a", "c"); got.Revision != 2 || got.Targets[0].Version != "9" {
		t.Fatalf("after a conflict and an update in one transaction: %+v", got)
	}
}

func testRouteList(t *testing.T, open func(t *testing.T) RouteStore) {
	s := routeStore(t, open)
	// Created out of order; listing is by the bytes of the capability ('-' < '.' < '0' < '_' < 'a'),
	// as Go compares strings, so cursors agree with the order.
	caps := []string{"ab", "a_b", "a.b", "a-b", "a0", "z.z", "a"}
	for _, c := range caps {
		rtCreate(t, s, rt("ten_a", c))
	}
	want := slices.Clone(caps)
	slices.Sort(want)
	rtCreate(t, s, rt("ten_b", "a.b"), rt("ten_b", "b"))

	var got []string
	after := ""
	for range 10 {
		page, err := s.ListRoutes(t.Context(), "ten_a", after, 3)
		if err != nil {
			t.Fatalf("ListRoutes: %v", err)
		}
		if len(page) > 3 {
			t.Fatalf("ListRoutes returned %d routes, limit 3", len(page))
		}
		for _, r := range page {
			if r.TenantID != "ten_a" {
				t.Fatalf("tenant a's list holds %+v", r)
			}
			got = append(got, r.Capability)
		}
		if len(page) < 3 {
			break
		}
		after = page[len(page)-1].Capability
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("tenant a's routes, paged (-want +got):\n%s", diff)
	}
	full, err := s.ListRoutes(t.Context(), "ten_b", "", 10)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]routing.Route{storedRoute(rt("ten_b", "a.b")), storedRoute(rt("ten_b", "b"))}, full); diff != "" {
		t.Errorf("tenant b's routes (-want +got):\n%s", diff)
	}
	none, err := s.ListRoutes(t.Context(), "ten_nobody", "", 10)
	if err != nil || len(none) != 0 {
		t.Errorf("ListRoutes of an unknown tenant = %v, %v", none, err)
	}
}

func testRouteUpdate(t *testing.T, open func(t *testing.T) RouteStore) {
	s := routeStore(t, open)
	first := rt("ten_a", "c")
	first.Hedge, first.StickyHeader, first.TimeoutMs = &routing.Hedge{DelayMs: 10, MaxExtra: 1}, "X-K", 100
	rtCreate(t, s, first, rt("ten_b", "c"))
	ctx := t.Context()

	next := first
	next.Targets = []routing.Target{{AgentID: "agt_01jz0000000000000000000001", Weight: 5, Priority: 1}, {Version: "2.0.0", Weight: 1}}
	next.StickyHeader, next.TimeoutMs, next.Retryable, next.Hedge = "", 0, true, nil
	next.UpdatedAt, next.Revision = base.Add(time.Minute), 2
	if err := s.UpdateRoute(ctx, next, 1); err != nil {
		t.Fatalf("UpdateRoute: %v", err)
	}
	if diff := cmp.Diff(storedRoute(next), rtGet(t, s, "ten_a", "c")); diff != "" {
		t.Errorf("updated route (-want +got):\n%s", diff)
	}
	// The update is keyed by tenant: tenant b's route of the same capability is untouched.
	if got := rtGet(t, s, "ten_b", "c"); got.Revision != 1 || got.Retryable {
		t.Errorf("tenant b's route changed: %+v", got)
	}
	// A creation time given to an update is not written.
	moved := next
	moved.CreatedAt, moved.Revision = base.Add(24*time.Hour), 3
	if err := s.UpdateRoute(ctx, moved, 2); err != nil {
		t.Fatal(err)
	}
	if got := rtGet(t, s, "ten_a", "c"); !got.CreatedAt.Equal(stored(base)) {
		t.Errorf("UpdateRoute moved created_at to %v", got.CreatedAt)
	}

	stale := next
	stale.Revision = 9
	rtCode(t, "UpdateRoute at a stale revision", s.UpdateRoute(ctx, stale, 1), errs.Conflict)
	rtCode(t, "UpdateRoute of an unknown route", s.UpdateRoute(ctx, rt("ten_a", "gone"), 1), errs.NotFound)
	otherTenant := rt("ten_nobody", "c")
	otherTenant.Revision = 2
	rtCode(t, "UpdateRoute in an unknown tenant", s.UpdateRoute(ctx, otherTenant, 1), errs.NotFound)
	if got := rtGet(t, s, "ten_a", "c"); got.Revision != 3 {
		t.Errorf("refused updates changed the route: %+v", got)
	}
}

func testRouteDelete(t *testing.T, open func(t *testing.T) RouteStore) {
	s := routeStore(t, open)
	rtCreate(t, s, rt("ten_a", "c"), rt("ten_b", "c"))
	ctx := t.Context()
	rtCode(t, "DeleteRoute at a stale revision", s.DeleteRoute(ctx, "ten_a", "c", 2), errs.Conflict)
	if err := s.DeleteRoute(ctx, "ten_a", "c", 1); err != nil {
		t.Fatalf("DeleteRoute: %v", err)
	}
	_, err := s.Route(ctx, "ten_a", "c")
	rtCode(t, "Route after DeleteRoute", err, errs.NotFound)
	rtCode(t, "DeleteRoute again", s.DeleteRoute(ctx, "ten_a", "c", 1), errs.NotFound)
	_ = rtGet(t, s, "ten_b", "c") // another tenant's route of the same capability stays
}

func testRouteTenantDeleted(t *testing.T, open func(t *testing.T) RouteStore) {
	s := routeStore(t, open)
	rtCreate(t, s, rt("ten_a", "c"), rt("ten_b", "c"))
	if err := s.DeleteTenant(t.Context(), "ten_b"); err != nil {
		t.Fatalf("DeleteTenant: %v", err)
	}
	_, err := s.Route(t.Context(), "ten_b", "c")
	rtCode(t, "a deleted tenant's route", err, errs.NotFound)
	_ = rtGet(t, s, "ten_a", "c")
}

func testRouteConcurrentUpdates(t *testing.T, open func(t *testing.T) RouteStore) {
	s := routeStore(t, open)
	rtCreate(t, s, rt("ten_a", "c"))
	const writers = 8
	var wg sync.WaitGroup
	errc := make(chan error, writers)
	for i := range writers {
		wg.Go(func() {
			// Read, change, compare-and-set; retry on a lost race, as the Service does.
			for {
				cur, err := s.Route(t.Context(), "ten_a", "c")
				if err != nil {
					errc <- err
					return
				}
				next := cur
				next.Targets = []routing.Target{{Version: fmt.Sprint(i), Weight: i}}
				next.Revision = cur.Revision + 1
				err = s.UpdateRoute(t.Context(), next, cur.Revision)
				if errors.Is(err, routing.ErrRevisionConflict) {
					continue
				}
				errc <- err
				return
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			t.Fatalf("concurrent UpdateRoute: %v", err)
		}
	}
	if got := rtGet(t, s, "ten_a", "c"); got.Revision != 1+writers {
		t.Fatalf("revision after %d successful updates = %d, want %d (an update was lost)", writers, got.Revision, 1+writers)
	}
}

func testRouteTransactions(t *testing.T, open func(t *testing.T) RouteStore) {
	s := routeStore(t, open)
	ctx := t.Context()
	boom := errors.New("boom")
	err := s.InTx(ctx, func(ctx context.Context) error {
		if err := s.CreateRoute(ctx, rt("ten_a", "tx")); err != nil {
			return err
		}
		// The transaction sees its own write.
		if _, err := s.Route(ctx, "ten_a", "tx"); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("InTx = %v, want the callback's error", err)
	}
	_, err = s.Route(ctx, "ten_a", "tx")
	rtCode(t, "a rolled-back route", err, errs.NotFound)
	if err := s.InTx(ctx, func(ctx context.Context) error { return s.CreateRoute(ctx, rt("ten_a", "tx")) }); err != nil {
		t.Fatalf("InTx: %v", err)
	}
	_ = rtGet(t, s, "ten_a", "tx")
}
