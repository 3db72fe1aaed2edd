package storetest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/perimeter"
	"github.com/nops-kernel/nops/internal/tenant"
)

// PerimeterStore is what RunPerimeter needs: the perimeter store, the tenant store (settings
// belong to tenants and go with them) and InTx.
type PerimeterStore interface {
	perimeter.Store
	tenant.Store
	InTx(ctx context.Context, fn func(ctx context.Context) error) error
}

// RunPerimeter runs the perimeter.Store suite. open must return a fresh store with every
// migration applied, on a database no other test uses, and close it through t.Cleanup.
func RunPerimeter(t *testing.T, open func(t *testing.T) PerimeterStore) {
	t.Run("round trip", func(t *testing.T) { t.Parallel(); testPerimeterRoundTrip(t, open) })
	t.Run("insert compare-and-set", func(t *testing.T) { t.Parallel(); testPerimeterInsert(t, open) })
	t.Run("update compare-and-set", func(t *testing.T) { t.Parallel(); testPerimeterUpdate(t, open) })
	t.Run("generation follows every change", func(t *testing.T) { t.Parallel(); testPerimeterGeneration(t, open) })
	t.Run("concurrent updates lose none", func(t *testing.T) { t.Parallel(); testPerimeterConcurrentUpdates(t, open) })
	t.Run("transactions", func(t *testing.T) { t.Parallel(); testPerimeterTransactions(t, open) })
}

// perStore is a store with tenants ten_a, ten_b and ten_c.
func perStore(t *testing.T, open func(t *testing.T) PerimeterStore) PerimeterStore {
	t.Helper()
	s := open(t)
	for _, tn := range []tenant.Tenant{domTenant("ten_a", "a", base), domTenant("ten_b", "b", base), domTenant("ten_c", "c", base)} {
		if err := s.CreateTenant(t.Context(), tn); err != nil {
			t.Fatalf("CreateTenant(%s): %v", tn.ID, err)
		}
	}
	return s
}

// perSettings returns version 1 settings of the tenant with the given origins.
func perSettings(tenantID string, require bool, origins ...string) perimeter.Settings {
	st := perimeter.Settings{TenantID: tenantID, RequireSignatures: require, Version: 1, UpdatedAt: base}
	for _, o := range origins {
		st.GatewayOrigins = append(st.GatewayOrigins, netip.MustParsePrefix(o))
	}
	return st
}

// storedPerimeter is what an adapter returns for st.
func storedPerimeter(st perimeter.Settings) perimeter.Settings {
	st.UpdatedAt = stored(st.UpdatedAt)
	return st
}

func perPut(t *testing.T, s PerimeterStore, st perimeter.Settings, prev int64) {
	t.Helper()
	if err := s.PutPerimeter(t.Context(), st, prev); err != nil {
		t.Fatalf("PutPerimeter(%s, %d): %v", st.TenantID, prev, err)
	}
}

func perGet(t *testing.T, s PerimeterStore, tenantID string) perimeter.Settings {
	t.Helper()
	st, err := s.Perimeter(t.Context(), tenantID)
	if err != nil {
		t.Fatalf("Perimeter(%s): %v", tenantID, err)
	}
	return st
}

func perGeneration(t *testing.T, s PerimeterStore) int64 {
	t.Helper()
	g, err := s.PerimeterGeneration(t.Context())
	if err != nil {
		t.Fatalf("PerimeterGeneration: %v", err)
	}
	return g
}

// perConflict fails unless err is an errs.Conflict wrapping perimeter.ErrVersionConflict.
func perConflict(t *testing.T, what string, err error) {
	t.Helper()
	domCode(t, what, err, errs.Conflict)
	if !errors.Is(err, perimeter.ErrVersionConflict) {
		t.Fatalf("%s: %v does not wrap ErrVersionConflict", what, err)
	}
}

// cmpPrefix compares netip.Prefix values by their text (cmp cannot see unexported fields).
var cmpPrefix = cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })

func testPerimeterRoundTrip(t *testing.T, open func(t *testing.T) PerimeterStore) {
	s := perStore(t, open)
	_, err := s.Perimeter(t.Context(), "ten_a")
	domCode(t, "Perimeter of a tenant without settings", err, errs.NotFound)
	all, err := s.AllPerimeters(t.Context())
	if err != nil || len(all) != 0 {
		t.Fatalf("AllPerimeters of an empty table = %v, %v; want none", all, err)
	}

	full := perSettings("ten_b", true, "10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32", "2001:db8:1::1/128")
	full.UpdatedAt, full.Version = base.Add(time.Hour), 7
	empty := perSettings("ten_a", false)
	perPut(t, s, full, 0)
	perPut(t, s, empty, 0)
	for _, want := range []perimeter.Settings{full, empty} {
		got := perGet(t, s, want.TenantID)
		if diff := cmp.Diff(storedPerimeter(want), got, cmpPrefix); diff != "" {
			t.Errorf("Perimeter(%s) (-want +got):\n%s", want.TenantID, diff)
		}
		checkUTC(t, want.TenantID+" UpdatedAt", got.UpdatedAt)
	}
	if got := perGet(t, s, "ten_a"); got.GatewayOrigins != nil {
		t.Errorf("no origins come back as %#v, want nil", got.GatewayOrigins)
	}
	all, err = s.AllPerimeters(t.Context())
	if err != nil {
		t.Fatalf("AllPerimeters: %v", err)
	}
	if diff := cmp.Diff([]perimeter.Settings{storedPerimeter(empty), storedPerimeter(full)}, all, cmpPrefix); diff != "" {
		t.Errorf("AllPerimeters, in tenant order (-want +got):\n%s", diff)
	}
}

func testPerimeterInsert(t *testing.T, open func(t *testing.T) PerimeterStore) {
	s := perStore(t, open)
	ctx := t.Context()
	domCode(t, "PutPerimeter of an unknown tenant", s.PutPerimeter(ctx, perSettings("ten_nobody", true), 0), errs.NotFound)
	perPut(t, s, perSettings("ten_a", true, "10.0.0.0/8"), 0)
	// A second insert lost the race to the first: a version conflict, not a failure.
	perConflict(t, "PutPerimeter inserting over a row", s.PutPerimeter(ctx, perSettings("ten_a", false), 0))
	if got := perGet(t, s, "ten_a"); !got.RequireSignatures || got.Version != 1 {
		t.Fatalf("a refused insert changed the row: %+v", got)
	}
	// The refused insert left the transaction usable (PostgreSQL aborts on an error).
	err := s.InTx(ctx, func(ctx context.Context) error {
		if err := s.PutPerimeter(ctx, perSettings("ten_a", false), 0); !errors.Is(err, perimeter.ErrVersionConflict) {
			return fmt.Errorf("insert over a row in a transaction: %w", err)
		}
		return s.PutPerimeter(ctx, perSettings("ten_b", false), 0)
	})
	if err != nil {
		t.Fatalf("InTx: %v", err)
	}
	_ = perGet(t, s, "ten_b")
}

func testPerimeterUpdate(t *testing.T, open func(t *testing.T) PerimeterStore) {
	s := perStore(t, open)
	ctx := t.Context()
	perPut(t, s, perSettings("ten_a", false, "10.0.0.0/8"), 0)

	next := perSettings("ten_a", true, "192.0.2.0/24", "2001:db8::/48")
	next.Version, next.UpdatedAt = 2, base.Add(time.Minute)
	perPut(t, s, next, 1)
	if diff := cmp.Diff(storedPerimeter(next), perGet(t, s, "ten_a"), cmpPrefix); diff != "" {
		t.Errorf("updated settings (-want +got):\n%s", diff)
	}
	cleared := perSettings("ten_a", true)
	cleared.Version = 3
	perPut(t, s, cleared, 2)
	if got := perGet(t, s, "ten_a"); got.GatewayOrigins != nil || got.Version != 3 {
		t.Errorf("clearing the origins gave %+v", got)
	}

	stale := perSettings("ten_a", false)
	stale.Version = 3
	perConflict(t, "PutPerimeter at a stale version", s.PutPerimeter(ctx, stale, 2))
	noRow := perSettings("ten_b", true)
	noRow.Version = 2
	domCode(t, "PutPerimeter updating a tenant without a row", s.PutPerimeter(ctx, noRow, 1), errs.NotFound)
	if got := perGet(t, s, "ten_a"); !got.RequireSignatures || got.Version != 3 {
		t.Errorf("refused updates changed the row: %+v", got)
	}
}

func testPerimeterGeneration(t *testing.T, open func(t *testing.T) PerimeterStore) {
	s := perStore(t, open)
	ctx := t.Context()
	g := perGeneration(t, s)
	moved := func(what string, want bool) {
		t.Helper()
		now := perGeneration(t, s)
		if (now != g) != want {
			t.Fatalf("after %s the generation went %d -> %d; want a change: %v", what, g, now, want)
		}
		g = now
	}
	perPut(t, s, perSettings("ten_a", true), 0)
	moved("an insert", true)
	_ = perGet(t, s, "ten_a")
	if _, err := s.AllPerimeters(ctx); err != nil {
		t.Fatal(err)
	}
	moved("reads", false)
	upd := perSettings("ten_a", false, "10.0.0.0/8")
	upd.Version = 2
	perPut(t, s, upd, 1)
	moved("an update", true)
	_ = s.PutPerimeter(ctx, upd, 1)
	_ = s.PutPerimeter(ctx, perSettings("ten_a", true), 0)
	_ = s.PutPerimeter(ctx, perSettings("ten_nobody", true), 0)
	moved("refused writes", false)
	perPut(t, s, perSettings("ten_b", true), 0)
	moved("another tenant's insert", true)
	// Deleting a tenant deletes its settings by foreign key: replicas must see that too.
	if err := s.DeleteTenant(ctx, "ten_b"); err != nil {
		t.Fatalf("DeleteTenant: %v", err)
	}
	moved("DeleteTenant", true)
	_, err := s.Perimeter(ctx, "ten_b")
	domCode(t, "a deleted tenant's settings", err, errs.NotFound)
	if err := s.DeleteTenant(ctx, "ten_c"); err != nil {
		t.Fatalf("DeleteTenant: %v", err)
	}
	moved("deleting a tenant without settings", false)
}

func testPerimeterConcurrentUpdates(t *testing.T, open func(t *testing.T) PerimeterStore) {
	s := perStore(t, open)
	perPut(t, s, perSettings("ten_a", false), 0)
	const writers = 8
	var wg sync.WaitGroup
	errc := make(chan error, writers)
	for i := range writers {
		wg.Go(func() {
			// Read, change, compare-and-set; retry on a lost race, as Service.Put does.
			for {
				cur, err := s.Perimeter(t.Context(), "ten_a")
				if err != nil {
					errc <- err
					return
				}
				next := cur
				next.GatewayOrigins = []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 16)}
				next.Version = cur.Version + 1
				err = s.PutPerimeter(t.Context(), next, cur.Version)
				if errors.Is(err, perimeter.ErrVersionConflict) {
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
			t.Fatalf("concurrent PutPerimeter: %v", err)
		}
	}
	if got := perGet(t, s, "ten_a"); got.Version != 1+writers {
		t.Fatalf("version after %d successful updates = %d, want %d (an update was lost)", writers, got.Version, 1+writers)
	}
}

func testPerimeterTransactions(t *testing.T, open func(t *testing.T) PerimeterStore) {
	s := perStore(t, open)
	ctx := t.Context()
	g := perGeneration(t, s)
	boom := errors.New("boom")
	err := s.InTx(ctx, func(ctx context.Context) error {
		if err := s.PutPerimeter(ctx, perSettings("ten_a", true), 0); err != nil {
			return err
		}
		// The transaction sees its own write.
		if _, err := s.Perimeter(ctx, "ten_a"); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("InTx = %v, want the callback's error", err)
	}
	_, err = s.Perimeter(ctx, "ten_a")
	domCode(t, "rolled-back settings", err, errs.NotFound)
	if now := perGeneration(t, s); now != g {
		t.Fatalf("a rolled-back insert moved the generation %d -> %d", g, now)
	}
	if err := s.InTx(ctx, func(ctx context.Context) error { return s.PutPerimeter(ctx, perSettings("ten_a", true), 0) }); err != nil {
		t.Fatalf("InTx: %v", err)
	}
	_ = perGet(t, s, "ten_a")
	if now := perGeneration(t, s); now == g {
		t.Fatal("a committed insert did not move the generation")
	}
}
