package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/apikey"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/registry"
	"github.com/nops-kernel/nops/internal/store"
	"github.com/nops-kernel/nops/internal/tenant"
	"github.com/nops-kernel/nops/internal/user"
)

// DomainStore is what RunTenants, RunAgents and RunAPIKeys need: the tenant, agent and API key
// stores, whose tables reference one another (agents and keys belong to tenants, keys may belong
// to agents) so that each suite sets up rows of the others, the user store (a tenant's users go
// with it), InTx, and migrations (their down steps must work with rows in these tables).
type DomainStore interface {
	tenant.Store
	registry.Store
	apikey.Store
	user.Store
	InTx(ctx context.Context, fn func(ctx context.Context) error) error
	MigrateUp(ctx context.Context) error
	MigrateDown(ctx context.Context) error
	MigrationStatus(ctx context.Context) ([]store.MigrationStatus, error)
}

// RunTenants runs the tenant.Store suite. open must return a fresh store with every migration
// applied, on a database no other test uses, and close it through t.Cleanup.
func RunTenants(t *testing.T, open func(t *testing.T) DomainStore) {
	t.Run("round trip", func(t *testing.T) { t.Parallel(); testTenantRoundTrip(t, open) })
	t.Run("conflicts", func(t *testing.T) { t.Parallel(); testTenantConflicts(t, open) })
	t.Run("unknown tenant", func(t *testing.T) { t.Parallel(); testTenantUnknown(t, open) })
	t.Run("list order and paging", func(t *testing.T) { t.Parallel(); testTenantList(t, open) })
	t.Run("update compare-and-set", func(t *testing.T) { t.Parallel(); testTenantUpdate(t, open) })
	t.Run("concurrent updates lose none", func(t *testing.T) { t.Parallel(); testTenantConcurrentUpdates(t, open) })
	t.Run("delete with agents, keys and users", func(t *testing.T) { t.Parallel(); testTenantDelete(t, open) })
	t.Run("transactions", func(t *testing.T) { t.Parallel(); testTenantTransactions(t, open) })
	t.Run("migrations down and up with rows", func(t *testing.T) { t.Parallel(); testDomainMigrations(t, open) })
}

// domTenant returns an active tenant at version 1 created (and updated) at created.
func domTenant(id, name string, created time.Time) tenant.Tenant {
	return tenant.Tenant{ID: id, Name: name, DisplayName: "Tenant " + name, Status: tenant.StatusActive,
		CreatedAt: created, UpdatedAt: created, Version: 1}
}

// storedTenant is what an adapter returns for t.
func storedTenant(t tenant.Tenant) tenant.Tenant {
	t.CreatedAt, t.UpdatedAt = stored(t.CreatedAt), stored(t.UpdatedAt)
	return t
}

// domCode fails unless err carries code.
func domCode(t *testing.T, what string, err error, code errs.Code) {
	t.Helper()
	if got := errs.CodeOf(err); got != code {
		t.Fatalf("%s: error %v (code %q), want code %q", what, err, got, code)
	}
}

// domCreateTenants stores ts, failing the test on any error.
func domCreateTenants(t *testing.T, s DomainStore, ts ...tenant.Tenant) {
	t.Helper()
	for _, tn := range ts {
		if err := s.CreateTenant(t.Context(), tn); err != nil {
			t.Fatalf("CreateTenant(%s): %v", tn.ID, err)
		}
	}
}

func domTenantExists(t *testing.T, ctx context.Context, s DomainStore, id string) bool {
	t.Helper()
	_, err := s.TenantByID(ctx, id)
	if err != nil && !errs.Is(err, errs.NotFound) {
		t.Fatalf("TenantByID(%s): %v", id, err)
	}
	return err == nil
}

func testTenantRoundTrip(t *testing.T, open func(t *testing.T) DomainStore) {
	s := open(t)
	tests := []struct {
		name string
		in   tenant.Tenant
	}{
		{"active with display name", tenant.Tenant{
			ID: "ten_01", Name: "acme", DisplayName: "Acme Ünïcode Ltd", Status: tenant.StatusActive,
			CreatedAt: base, UpdatedAt: base.Add(time.Hour), Version: 1,
		}},
		{"suspended without display name", tenant.Tenant{
			ID: "ten_02", Name: "quiet-1", Status: tenant.StatusSuspended,
			CreatedAt: base.UTC(), UpdatedAt: base.Add(time.Minute), Version: 7,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.CreateTenant(t.Context(), tt.in); err != nil {
				t.Fatalf("CreateTenant: %v", err)
			}
			got, err := s.TenantByID(t.Context(), tt.in.ID)
			if err != nil {
				t.Fatalf("TenantByID: %v", err)
			}
			if diff := cmp.Diff(storedTenant(tt.in), got); diff != "" {
				t.Errorf("tenant (-want +got):\n%s", diff)
			}
			checkUTC(t, "CreatedAt", got.CreatedAt)
			checkUTC(t, "UpdatedAt", got.UpdatedAt)
		})
	}
}

func testTenantConflicts(t *testing.T, open func(t *testing.T) DomainStore) {
	s := open(t)
	first := domTenant("ten_01", "acme", base)
	domCreateTenants(t, s, first)
	tests := []struct {
		name string
		in   tenant.Tenant
	}{
		{"same name", domTenant("ten_02", "acme", base.Add(time.Second))},
		{"same id", domTenant("ten_01", "other", base.Add(time.Second))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			domCode(t, "CreateTenant", s.CreateTenant(t.Context(), tt.in), errs.Conflict)
		})
	}
	all, err := s.ListTenants(t.Context(), nil, 10)
	if err != nil {
		t.Fatalf("ListTenants: %v", err)
	}
	if diff := cmp.Diff([]tenant.Tenant{storedTenant(first)}, all); diff != "" {
		t.Errorf("tenants after rejected duplicates (-want +got):\n%s", diff)
	}
}

func testTenantUnknown(t *testing.T, open func(t *testing.T) DomainStore) {
	s := open(t)
	ctx := t.Context()
	domCreateTenants(t, s, domTenant("ten_01", "acme", base))
	_, err := s.TenantByID(ctx, "ten_nope")
	domCode(t, "TenantByID", err, errs.NotFound)
	err = s.UpdateTenant(ctx, domTenant("ten_nope", "nope", base), 1)
	domCode(t, "UpdateTenant", err, errs.NotFound)
	if errors.Is(err, tenant.ErrVersionConflict) {
		t.Errorf("UpdateTenant of an unknown tenant wraps ErrVersionConflict: %v", err)
	}
	domCode(t, "DeleteTenant", s.DeleteTenant(ctx, "ten_nope"), errs.NotFound)
	n, err := s.CountAgents(ctx, "ten_nope")
	if err != nil || n != 0 {
		t.Errorf("CountAgents(unknown) = %d, %v; want 0, nil", n, err)
	}
	ids, err := s.DeleteTenantAgents(ctx, "ten_nope")
	if err != nil || ids != nil {
		t.Errorf("DeleteTenantAgents(unknown) = %v, %v; want nil, nil", ids, err)
	}
}

func testTenantList(t *testing.T, open func(t *testing.T) DomainStore) {
	s := open(t)
	ctx := t.Context()
	whole := base.Truncate(time.Second)
	// Inserted out of order. Three share a creation time, with IDs whose byte order ("B" < "a")
	// differs from a case-insensitive one; one sits on a whole second just before one with a
	// fraction.
	in := []tenant.Tenant{
		domTenant("ten_d", "d", whole.Add(2*time.Second)),
		domTenant("ten_c", "c", whole.Add(500*time.Millisecond)),
		domTenant("ten_a", "a", whole),
		domTenant("ten_B", "b-upper", whole),
		domTenant("ten_b", "b", whole),
		domTenant("ten_e", "e", base.Add(-24*time.Hour)),
		domTenant("ten_f", "f", whole.Add(time.Hour)),
	}
	domCreateTenants(t, s, in...)
	order := []string{"ten_e", "ten_B", "ten_a", "ten_b", "ten_c", "ten_d", "ten_f"}
	byID := map[string]tenant.Tenant{}
	for _, tn := range in {
		byID[tn.ID] = storedTenant(tn)
	}
	want := func(ids ...string) []tenant.Tenant {
		var out []tenant.Tenant
		for _, id := range ids {
			out = append(out, byID[id])
		}
		return out
	}
	cursor := func(id string) *tenant.Cursor { c := tenant.CursorOf(byID[id]); return &c }

	tests := []struct {
		name  string
		after *tenant.Cursor
		limit int
		want  []tenant.Tenant
	}{
		{"all", nil, 100, want(order...)},
		{"first page", nil, 3, want(order[:3]...)},
		{"after a tie", cursor("ten_B"), 2, want("ten_a", "ten_b")},
		{"after the last of a tie", cursor("ten_b"), 100, want(order[4:]...)},
		{"between two IDs of a tie", &tenant.Cursor{CreatedAt: whole, ID: "ten_Z"}, 100, want(order[2:]...)},
		{"after a time no tenant has", &tenant.Cursor{CreatedAt: whole.Add(time.Second), ID: "ten_zzz"}, 100, want("ten_d", "ten_f")},
		{"after the last", cursor("ten_f"), 100, nil},
		{"limit zero", nil, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.ListTenants(ctx, tt.after, tt.limit)
			if err != nil {
				t.Fatalf("ListTenants: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ListTenants (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("paging visits every tenant once", func(t *testing.T) {
		var (
			got   []tenant.Tenant
			after *tenant.Cursor
		)
		for range len(in) + 1 {
			page, err := s.ListTenants(ctx, after, 2)
			if err != nil {
				t.Fatalf("ListTenants: %v", err)
			}
			if len(page) == 0 {
				break
			}
			got = append(got, page...)
			c := tenant.CursorOf(page[len(page)-1])
			after = &c
		}
		if diff := cmp.Diff(want(order...), got); diff != "" {
			t.Errorf("pages (-want +got):\n%s", diff)
		}
	})
}

func testTenantUpdate(t *testing.T, open func(t *testing.T) DomainStore) {
	s := open(t)
	ctx := t.Context()
	orig := domTenant("ten_01", "acme", base)
	domCreateTenants(t, s, orig)

	next := orig
	next.DisplayName = "Acme (suspended)"
	next.Status = tenant.StatusSuspended
	next.UpdatedAt = base.Add(time.Hour)
	next.Version = 2
	// Name and CreatedAt are not UpdateTenant's to write.
	next.Name = "renamed"
	next.CreatedAt = base.Add(48 * time.Hour)
	if err := s.UpdateTenant(ctx, next, 1); err != nil {
		t.Fatalf("UpdateTenant: %v", err)
	}
	want := next
	want.Name, want.CreatedAt = orig.Name, orig.CreatedAt
	want = storedTenant(want)
	check := func(t *testing.T) {
		t.Helper()
		got, err := s.TenantByID(ctx, orig.ID)
		if err != nil {
			t.Fatalf("TenantByID: %v", err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("tenant (-want +got):\n%s", diff)
		}
	}
	check(t)

	stale := next
	stale.Status = tenant.StatusActive
	stale.Version = 2
	err := s.UpdateTenant(ctx, stale, 1)
	domCode(t, "UpdateTenant with a stale version", err, errs.Conflict)
	if !errors.Is(err, tenant.ErrVersionConflict) {
		t.Errorf("UpdateTenant with a stale version: %v does not wrap ErrVersionConflict", err)
	}
	check(t)
}

// testTenantConcurrentUpdates has goroutines each bump the version of one tenant a few times,
// re-reading after every lost compare-and-set: no success may be lost or doubled.
func testTenantConcurrentUpdates(t *testing.T, open func(t *testing.T) DomainStore) {
	s := open(t)
	ctx := t.Context()
	domCreateTenants(t, s, domTenant("ten_01", "acme", base))
	const workers, each = 10, 5
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for done := 0; done < each; {
				cur, err := s.TenantByID(ctx, "ten_01")
				if err != nil {
					errc <- err
					return
				}
				next := cur
				next.Version++
				next.DisplayName = fmt.Sprintf("worker %d update %d", w, done)
				next.UpdatedAt = base.Add(time.Duration(next.Version) * time.Second)
				err = s.UpdateTenant(ctx, next, cur.Version)
				switch {
				case err == nil:
					done++
				case !errors.Is(err, tenant.ErrVersionConflict):
					errc <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	got, err := s.TenantByID(ctx, "ten_01")
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != 1+workers*each {
		t.Errorf("version after %d successful updates = %d, want %d", workers*each, got.Version, 1+workers*each)
	}
}

func testTenantDelete(t *testing.T, open func(t *testing.T) DomainStore) {
	s := open(t)
	ctx := t.Context()
	tenA, tenB := domTenant("ten_a", "a", base), domTenant("ten_b", "b", base)
	domCreateTenants(t, s, tenA, tenB)
	// a2 registers before a1, so registration order differs from ID order.
	a1 := domAgent("ten_a", "agt_a1", "one", base.Add(2*time.Second), "run")
	a2 := domAgent("ten_a", "agt_a2", "two", base.Add(time.Second), "run")
	b1 := domAgent("ten_b", "agt_b1", "one", base, "run")
	domCreateAgents(t, s, a1, a2, b1)
	keyA := domKey("ak_a", "ten_a", "")
	keyA1 := domKey("ak_a1", "ten_a", "agt_a1")
	keyB := domKey("ak_b", "ten_b", "")
	domCreateKeys(t, s, keyA, keyA1, keyB)
	users := []user.User{
		{ID: "usr_a", Username: "alice", PasswordHash: []byte("h"), Roles: []string{user.RoleAdmin}, TenantID: "ten_a", CreatedAt: base, UpdatedAt: base},
		{ID: "usr_b", Username: "bob", PasswordHash: []byte("h"), Roles: []string{user.RoleAdmin}, TenantID: "ten_b", CreatedAt: base, UpdatedAt: base},
		{ID: "usr_root", Username: "root", PasswordHash: []byte("h"), Roles: []string{user.RoleSuperAdmin}, CreatedAt: base, UpdatedAt: base},
	}
	for _, u := range users {
		if err := s.CreateUser(ctx, u); err != nil {
			t.Fatalf("CreateUser: %v", err)
		}
	}
	count := func(id string, want int64) {
		t.Helper()
		n, err := s.CountAgents(ctx, id)
		if err != nil {
			t.Fatalf("CountAgents(%s): %v", id, err)
		}
		if n != want {
			t.Errorf("CountAgents(%s) = %d, want %d", id, n, want)
		}
	}
	keyExists := func(id string) bool {
		t.Helper()
		_, err := s.APIKey(ctx, id)
		if err != nil && !errs.Is(err, errs.NotFound) {
			t.Fatalf("APIKey(%s): %v", id, err)
		}
		return err == nil
	}
	userExists := func(name string) bool {
		t.Helper()
		_, err := s.UserByUsername(ctx, name)
		if err != nil && !errs.Is(err, errs.NotFound) {
			t.Fatalf("UserByUsername(%s): %v", name, err)
		}
		return err == nil
	}
	count("ten_a", 2)
	count("ten_b", 1)

	// The foreign key refuses while agents remain, and nothing is deleted.
	domCode(t, "DeleteTenant with agents", s.DeleteTenant(ctx, "ten_a"), errs.Conflict)
	if !domTenantExists(t, ctx, s, "ten_a") || !keyExists("ak_a") || !keyExists("ak_a1") || !userExists("alice") {
		t.Fatal("a refused DeleteTenant deleted something")
	}

	ids, err := s.DeleteTenantAgents(ctx, "ten_a")
	if err != nil {
		t.Fatalf("DeleteTenantAgents: %v", err)
	}
	if diff := cmp.Diff([]string{"agt_a2", "agt_a1"}, ids); diff != "" {
		t.Errorf("DeleteTenantAgents IDs, in registration order (-want +got):\n%s", diff)
	}
	count("ten_a", 0)
	count("ten_b", 1)
	if keyExists("ak_a1") {
		t.Error("the key of a deleted agent survived it")
	}
	if !keyExists("ak_a") {
		t.Error("DeleteTenantAgents deleted the tenant's own key")
	}
	cands, err := s.RoutingCandidates(ctx, "ten_a", "run", time.Time{}, 10)
	if err != nil || cands != nil {
		t.Errorf("RoutingCandidates after DeleteTenantAgents = %v, %v; want nil, nil", cands, err)
	}
	if ids, err := s.DeleteTenantAgents(ctx, "ten_a"); err != nil || ids != nil {
		t.Errorf("second DeleteTenantAgents = %v, %v; want nil, nil", ids, err)
	}

	if err := s.DeleteTenant(ctx, "ten_a"); err != nil {
		t.Fatalf("DeleteTenant: %v", err)
	}
	if domTenantExists(t, ctx, s, "ten_a") {
		t.Error("deleted tenant still found")
	}
	if keyExists("ak_a") {
		t.Error("the tenant's key survived it")
	}
	if userExists("alice") {
		t.Error("the tenant's user survived it")
	}
	if !domTenantExists(t, ctx, s, "ten_b") || !keyExists("ak_b") || !userExists("bob") || !userExists("root") {
		t.Error("DeleteTenant deleted another tenant's rows, or a user above tenants")
	}
	if _, err := s.AgentByID(ctx, "ten_b", "agt_b1"); err != nil {
		t.Errorf("AgentByID of another tenant's agent: %v", err)
	}
	domCode(t, "second DeleteTenant", s.DeleteTenant(ctx, "ten_a"), errs.NotFound)
}

func testTenantTransactions(t *testing.T, open func(t *testing.T) DomainStore) {
	ctx := t.Context()
	boom := errors.New("boom")

	t.Run("rollback leaves nothing", func(t *testing.T) {
		s := open(t)
		domCreateTenants(t, s, domTenant("ten_old", "old", base))
		err := s.InTx(ctx, func(ctx context.Context) error {
			if err := s.CreateTenant(ctx, domTenant("ten_new", "new", base.Add(time.Second))); err != nil {
				return err
			}
			if !domTenantExists(t, ctx, s, "ten_new") {
				t.Error("a read inside the transaction does not see its own write")
			}
			ts, err := s.ListTenants(ctx, nil, 10)
			if err != nil {
				return err
			}
			if len(ts) != 2 {
				t.Errorf("ListTenants inside the transaction = %d tenants, want 2", len(ts))
			}
			upd := domTenant("ten_old", "old", base)
			upd.Status, upd.Version = tenant.StatusSuspended, 2
			if err := s.UpdateTenant(ctx, upd, 1); err != nil {
				return err
			}
			if err := s.DeleteTenant(ctx, "ten_new"); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("InTx = %v, want the callback's error", err)
		}
		got, err := s.ListTenants(ctx, nil, 10)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]tenant.Tenant{storedTenant(domTenant("ten_old", "old", base))}, got); diff != "" {
			t.Errorf("tenants after rollback (-want +got):\n%s", diff)
		}
	})

	t.Run("cascade delete commits as one", func(t *testing.T) {
		s := open(t)
		domCreateTenants(t, s, domTenant("ten_a", "a", base))
		domCreateAgents(t, s, domAgent("ten_a", "agt_1", "one", base, "run"))
		domCreateKeys(t, s, domKey("ak_1", "ten_a", "agt_1"), domKey("ak_2", "ten_a", ""))
		var ids []string
		err := s.InTx(ctx, func(ctx context.Context) error {
			var err error
			if ids, err = s.DeleteTenantAgents(ctx, "ten_a"); err != nil {
				return err
			}
			return s.DeleteTenant(ctx, "ten_a")
		})
		if err != nil {
			t.Fatalf("InTx: %v", err)
		}
		if diff := cmp.Diff([]string{"agt_1"}, ids); diff != "" {
			t.Errorf("deleted agents (-want +got):\n%s", diff)
		}
		if domTenantExists(t, ctx, s, "ten_a") {
			t.Error("tenant survived")
		}
		if keys, err := s.ListAPIKeys(ctx, "ten_a", "", 10); err != nil || keys != nil {
			t.Errorf("ListAPIKeys after the tenant's deletion = %v, %v; want nil, nil", keys, err)
		}
	})

	t.Run("refused delete inside a transaction", func(t *testing.T) {
		s := open(t)
		domCreateTenants(t, s, domTenant("ten_a", "a", base))
		domCreateAgents(t, s, domAgent("ten_a", "agt_1", "one", base))
		err := s.InTx(ctx, func(ctx context.Context) error { return s.DeleteTenant(ctx, "ten_a") })
		domCode(t, "InTx(DeleteTenant with agents)", err, errs.Conflict)
		if !domTenantExists(t, ctx, s, "ten_a") {
			t.Error("tenant deleted despite its agents")
		}
	})
}

// firstDomainMigration is the version of 00003_tenants.sql, the first of the migrations whose
// tables these suites cover (00004_agents.sql and 00005_api_keys.sql follow).
const firstDomainMigration = 3

// testDomainMigrations reverts every migration down to (and including) the tenants one while
// tenants, agents, capabilities and keys have rows that reference one another, then applies them
// again: each down step must succeed with rows in place, the users table must keep its rows, and
// the recreated tables must be empty and usable.
func testDomainMigrations(t *testing.T, open func(t *testing.T) DomainStore) {
	s := open(t)
	ctx := t.Context()
	populate := func() {
		t.Helper()
		domCreateTenants(t, s, domTenant("ten_a", "a", base))
		domCreateAgents(t, s, domAgent("ten_a", "agt_1", "one", base, "run"))
		domCreateKeys(t, s, domKey("ak_1", "ten_a", "agt_1"), domKey("ak_2", "ten_a", ""))
	}
	populate()
	u := user.User{ID: "usr_a", Username: "alice", PasswordHash: []byte("h"), TenantID: "ten_a", CreatedAt: base, UpdatedAt: base}
	if err := s.CreateUser(ctx, u); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	readUser := func() user.User {
		t.Helper()
		got, err := s.UserByUsername(ctx, u.Username)
		if err != nil {
			t.Fatalf("UserByUsername: %v", err)
		}
		return got
	}
	before := readUser()

	for {
		status, err := s.MigrationStatus(ctx)
		if err != nil {
			t.Fatalf("MigrationStatus: %v", err)
		}
		var latest int64
		for _, m := range status {
			if m.Applied {
				latest = max(latest, m.Version)
			}
		}
		if latest < firstDomainMigration {
			break
		}
		if err := s.MigrateDown(ctx); err != nil {
			t.Fatalf("MigrateDown from version %d with rows in place: %v", latest, err)
		}
	}
	if _, err := s.TenantByID(ctx, "ten_a"); err == nil || errs.Is(err, errs.NotFound) {
		t.Fatalf("TenantByID with the tenants migration reverted: %v, want a failure (no table)", err)
	}
	if diff := cmp.Diff(before, readUser()); diff != "" {
		t.Fatalf("users after reverting the domain migrations (-before +after):\n%s", diff)
	}

	if err := s.MigrateUp(ctx); err != nil {
		t.Fatalf("MigrateUp: %v", err)
	}
	if _, err := s.TenantByID(ctx, "ten_a"); !errs.Is(err, errs.NotFound) {
		t.Fatalf("TenantByID on recreated tables: %v, want NotFound", err)
	}
	populate()
	if ids := domListIDs(t, ctx, s, "ten_a", "run"); len(ids) != 1 {
		t.Errorf("ListAgents(run) on recreated tables = %v, want agt_1", ids)
	}
}
