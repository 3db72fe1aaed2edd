package perimeter_test

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/goleak"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/perimeter"
	"github.com/nops-kernel/nops/internal/store/sqlite"
	"github.com/nops-kernel/nops/internal/tenant"
)

// The tests run Service.Run in goroutines of their own: goleak makes sure each returns.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// faultyStore is the real SQLite store whose reads of the generation can be made to fail.
type faultyStore struct {
	*sqlite.Store
	failGeneration atomic.Bool
}

func (f *faultyStore) PerimeterGeneration(ctx context.Context) (int64, error) {
	if f.failGeneration.Load() {
		return 0, errors.New("injected generation failure")
	}
	return f.Store.PerimeterGeneration(ctx)
}

// newStore opens a migrated SQLite store in a temporary directory with tenants, and returns it
// and the tenants' IDs.
func newStore(t *testing.T, names ...string) (*faultyStore, []string) {
	t.Helper()
	ctx := t.Context()
	st, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(t.TempDir(), "nops.db")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	if err := st.MigrateUp(ctx); err != nil {
		t.Fatal(err)
	}
	tenants, err := tenant.NewService(st, tenant.Config{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, n := range names {
		tn, err := tenants.Create(ctx, tenant.CreateInput{Name: n})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, tn.ID)
	}
	return &faultyStore{Store: st}, ids
}

func newService(t *testing.T, st perimeter.Store, opts perimeter.Options) *perimeter.Service {
	t.Helper()
	s, err := perimeter.NewService(st, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestServiceRefusals(t *testing.T) {
	st, ids := newStore(t, "acme")
	s := newService(t, st, perimeter.Options{})
	ctx := t.Context()
	if _, err := perimeter.NewService(nil, perimeter.Options{}); err == nil {
		t.Fatal("NewService(nil) succeeded")
	}
	if _, err := s.Get(ctx, "not-a-tenant"); errs.CodeOf(err) != errs.NotFound {
		t.Fatalf("Get of a malformed ID = %v, want not found", err)
	}
	for _, id := range []string{"not-a-tenant", "ten_01jz8y3w6v6r3b5q8x9k2m4n7a"} {
		if _, err := s.Put(ctx, id, perimeter.Input{RequireSignatures: true}, ""); errs.CodeOf(err) != errs.NotFound {
			t.Fatalf("Put of tenant %s = %v, want not found", id, err)
		}
	}
	_, err := s.Put(ctx, ids[0], perimeter.Input{GatewayOrigins: []string{"10.0.0.0/8", "nope"}}, "")
	if errs.CodeOf(err) != errs.Invalid || len(fieldNames(err)) != 1 || fieldNames(err)[0] != "body.gateway_origins[1]" {
		t.Fatalf("Put of a bad origin = %v (fields %v)", err, fieldNames(err))
	}
	if _, err := s.Put(ctx, ids[0], perimeter.Input{RequireSignatures: true}, `"stale"`); errs.CodeOf(err) != errs.PreconditionFailed {
		t.Fatalf("Put with a stale If-Match = %v, want precondition failed", err)
	}
	if got, err := s.Get(ctx, ids[0]); err != nil || got.Version != 0 || got.RequireSignatures {
		t.Fatalf("refused Puts changed the settings: %+v, %v", got, err)
	}
}

func TestServiceGetPut(t *testing.T) {
	st, ids := newStore(t, "acme")
	now := time.Date(2026, 2, 3, 4, 5, 6, 789123456, time.UTC)
	s := newService(t, st, perimeter.Options{Now: func() time.Time { return now }})
	ctx := t.Context()
	id := ids[0]

	def, err := s.Get(ctx, id)
	if err != nil || def.TenantID != id || def.Version != 0 || def.RequireSignatures || def.GatewayOrigins != nil || !def.UpdatedAt.IsZero() {
		t.Fatalf("Get of a tenant without settings = %+v, %v; want the defaults", def, err)
	}
	ch, err := s.Put(ctx, id, perimeter.Input{RequireSignatures: true, GatewayOrigins: []string{"10.0.0.0/8"}}, def.ETag())
	if err != nil {
		t.Fatal(err)
	}
	if !ch.Changed || ch.Before.Version != 0 || ch.After.Version != 1 || !ch.After.UpdatedAt.Equal(now.Truncate(time.Microsecond)) {
		t.Fatalf("first Put = %+v", ch)
	}
	// A stale ETag (the defaults') now fails; the current one passes.
	if _, err := s.Put(ctx, id, perimeter.Input{}, def.ETag()); errs.CodeOf(err) != errs.PreconditionFailed {
		t.Fatalf("Put with the defaults' ETag after a write = %v", err)
	}
	same, err := s.Put(ctx, id, perimeter.Input{RequireSignatures: true, GatewayOrigins: []string{"10.0.0.0/8"}}, ch.After.ETag())
	if err != nil || same.Changed || same.After.Version != 1 {
		t.Fatalf("Put of the same settings = %+v, %v; want no change", same, err)
	}
	ch, err = s.Put(ctx, id, perimeter.Input{}, "*")
	if err != nil || !ch.Changed || ch.After.Version != 2 || ch.After.RequireSignatures || ch.After.GatewayOrigins != nil {
		t.Fatalf("Put back to the defaults = %+v, %v", ch, err)
	}
	got, err := s.Get(ctx, id)
	if err != nil || got.Version != 2 || got.GatewayOrigins != nil {
		t.Fatalf("Get = %+v, %v", got, err)
	}
}

// TestServiceConcurrentPuts: unconditional Puts that race retry their compare-and-set, so none is
// lost and none fails.
func TestServiceConcurrentPuts(t *testing.T) {
	st, ids := newStore(t, "acme")
	s := newService(t, st, perimeter.Options{})
	const writers = 6
	var wg sync.WaitGroup
	errc := make(chan error, writers)
	for i := range writers {
		wg.Go(func() {
			_, err := s.Put(t.Context(), ids[0], perimeter.Input{GatewayOrigins: []string{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 16).String()}}, "")
			errc <- err
		})
	}
	wg.Wait()
	close(errc)
	failed := 0
	for err := range errc {
		if err != nil {
			// Three lost races in a row are reported as a conflict; anything else is a bug.
			if errs.CodeOf(err) != errs.Conflict {
				t.Fatalf("concurrent Put: %v", err)
			}
			failed++
		}
	}
	got, err := s.Get(t.Context(), ids[0])
	if err != nil || got.Version != int64(writers-failed) {
		t.Fatalf("version after %d successful Puts = %+v, %v", writers-failed, got, err)
	}
}

func TestServiceLookupRefresh(t *testing.T) {
	st, ids := newStore(t, "acme", "globex")
	reader := sdkmetric.NewManualReader()
	s := newService(t, st, perimeter.Options{MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))})
	other := newService(t, st, perimeter.Options{}) // another replica on the same database
	ctx := t.Context()
	a, b := ids[0], ids[1]

	if s.Loaded() {
		t.Fatal("Loaded before any Refresh")
	}
	if got := s.Lookup(a); got.TenantID != a || got.RequireSignatures || got.Version != 0 {
		t.Fatalf("Lookup before Refresh = %+v, want the defaults", got)
	}
	if _, err := other.Put(ctx, a, perimeter.Input{RequireSignatures: true, GatewayOrigins: []string{"192.0.2.0/24"}}, ""); err != nil {
		t.Fatal(err)
	}
	if got := s.Lookup(a); got.RequireSignatures {
		t.Fatal("Lookup changed without a Refresh")
	}
	if err := s.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if !s.Loaded() {
		t.Fatal("not Loaded after a Refresh")
	}
	got := s.Lookup(a)
	if !got.RequireSignatures || got.Version != 1 || !got.AllowsOrigin(netip.MustParseAddr("192.0.2.9")) || got.AllowsOrigin(netip.MustParseAddr("198.51.100.1")) {
		t.Fatalf("Lookup after Refresh = %+v", got)
	}
	if got := s.Lookup(b); got.TenantID != b || got.RequireSignatures {
		t.Fatalf("Lookup of a tenant without settings = %+v", got)
	}

	// A failed refresh keeps the snapshot in force and is counted.
	st.failGeneration.Store(true)
	if err := s.Refresh(ctx); err == nil {
		t.Fatal("Refresh with a failing store succeeded")
	}
	if got := s.Lookup(a); !got.RequireSignatures {
		t.Fatal("a failed Refresh dropped the snapshot")
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	if n := counter(rm, "nops_perimeter_refresh_failures_total"); n != 1 {
		t.Fatalf("refresh failures counted %d, want 1", n)
	}
	st.failGeneration.Store(false)

	// A tenant's deletion takes its settings away on the next refresh.
	if err := st.DeleteTenant(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := s.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got := s.Lookup(a); got.RequireSignatures || got.Version != 0 {
		t.Fatalf("Lookup of a deleted tenant = %+v", got)
	}
}

// TestServiceRunConverges: a change made through another replica reaches Lookup through Run.
func TestServiceRunConverges(t *testing.T) {
	st, ids := newStore(t, "acme")
	s := newService(t, st, perimeter.Options{})
	other := newService(t, st, perimeter.Options{})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, 10*time.Millisecond) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	}()
	if _, err := other.Put(t.Context(), ids[0], perimeter.Input{RequireSignatures: true}, ""); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !s.Lookup(ids[0]).RequireSignatures {
		if time.Now().After(deadline) {
			t.Fatal("Run did not pick up the change of another replica")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func counter(rm metricdata.ResourceMetrics, name string) int64 {
	var n int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			if sum, ok := m.Data.(metricdata.Sum[int64]); ok {
				for _, dp := range sum.DataPoints {
					n += dp.Value
				}
			}
		}
	}
	return n
}
