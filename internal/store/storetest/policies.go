package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/policy"
	"github.com/nops-kernel/nops/internal/tenant"
)

// PolicyStore is what RunPolicies needs: the policy store, the tenant store (policies belong to
// tenants and go with them) and InTx.
type PolicyStore interface {
	policy.Store
	tenant.Store
	InTx(ctx context.Context, fn func(ctx context.Context) error) error
}

// RunPolicies runs the policy.Store suite. open must return a fresh store with every migration
// applied, on a database no other test uses, and close it through t.Cleanup.
func RunPolicies(t *testing.T, open func(t *testing.T) PolicyStore) {
	t.Run("round trip", func(t *testing.T) { t.Parallel(); testPolicyRoundTrip(t, open) })
	t.Run("create errors", func(t *testing.T) { t.Parallel(); testPolicyCreateErrors(t, open) })
	t.Run("list order, paging and tenant isolation", func(t *testing.T) { t.Parallel(); testPolicyList(t, open) })
	t.Run("update compare-and-set", func(t *testing.T) { t.Parallel(); testPolicyUpdate(t, open) })
	t.Run("delete compare-and-set", func(t *testing.T) { t.Parallel(); testPolicyDelete(t, open) })
	t.Run("generation follows every change", func(t *testing.T) { t.Parallel(); testPolicyGeneration(t, open) })
	t.Run("concurrent updates lose none", func(t *testing.T) { t.Parallel(); testPolicyConcurrentUpdates(t, open) })
	t.Run("transactions", func(t *testing.T) { t.Parallel(); testPolicyTransactions(t, open) })
}

// polStore is a store with tenants ten_a and ten_b.
func polStore(t *testing.T, open func(t *testing.T) PolicyStore) PolicyStore {
	t.Helper()
	s := open(t)
	for _, tn := range []tenant.Tenant{domTenant("ten_a", "a", base), domTenant("ten_b", "b", base)} {
		if err := s.CreateTenant(t.Context(), tn); err != nil {
			t.Fatalf("CreateTenant(%s): %v", tn.ID, err)
		}
	}
	return s
}

// pol returns an enabled deny policy of the tenant ("" for a global one) at version 1.
func pol(id, tenantID, name string) policy.Policy {
	return policy.Policy{
		ID: id, TenantID: tenantID, Name: name, Description: "policy " + name, Effect: policy.EffectDeny,
		Expression: `action == "agents.delete"`, Enabled: true, CreatedAt: base, UpdatedAt: base, Version: 1,
	}
}

// storedPolicy is what an adapter returns for p: times in UTC at microsecond precision.
func storedPolicy(p policy.Policy) policy.Policy {
	p.CreatedAt, p.UpdatedAt = stored(p.CreatedAt), stored(p.UpdatedAt)
	return p
}

func polCreate(t *testing.T, s PolicyStore, ps ...policy.Policy) {
	t.Helper()
	for _, p := range ps {
		if err := s.CreatePolicy(t.Context(), p); err != nil {
			t.Fatalf("CreatePolicy(%s): %v", p.ID, err)
		}
	}
}

func polGet(t *testing.T, s PolicyStore, id string) policy.Policy {
	t.Helper()
	p, err := s.Policy(t.Context(), id)
	if err != nil {
		t.Fatalf("Policy(%s): %v", id, err)
	}
	return p
}

func polGeneration(t *testing.T, s PolicyStore) int64 {
	t.Helper()
	g, err := s.PolicyGeneration(t.Context())
	if err != nil {
		t.Fatalf("PolicyGeneration: %v", err)
	}
	return g
}

// polCode fails unless err carries code.
func polCode(t *testing.T, what string, err error, code errs.Code) {
	t.Helper()
	if got := errs.CodeOf(err); got != code {
		t.Fatalf("%s: error %v (code %q), want code %q", what, err, got, code)
	}
}

func testPolicyRoundTrip(t *testing.T, open func(t *testing.T) PolicyStore) {
	s := polStore(t, open)
	full := policy.Policy{
		ID: "pol_full", TenantID: "ten_a", Name: "heures ouvrées ✓", Description: "line one\nline two",
		Effect: policy.EffectAllow, Expression: "request.time.getHours(\"Europe/Paris\") >= 9 &&\n  request.time.getHours(\"Europe/Paris\") < 18",
		Enabled: false, CreatedAt: base, UpdatedAt: base.Add(time.Hour), Version: 7,
	}
	global := pol("pol_global", "", "global deny")
	polCreate(t, s, full, global)
	for _, want := range []policy.Policy{full, global} {
		got := polGet(t, s, want.ID)
		if diff := cmp.Diff(storedPolicy(want), got); diff != "" {
			t.Errorf("Policy(%s) (-want +got):\n%s", want.ID, diff)
		}
		checkUTC(t, want.ID+" CreatedAt", got.CreatedAt)
		checkUTC(t, want.ID+" UpdatedAt", got.UpdatedAt)
	}
	_, err := s.Policy(t.Context(), "pol_missing")
	polCode(t, "Policy of an unknown id", err, errs.NotFound)
	all, err := s.AllPolicies(t.Context())
	if err != nil {
		t.Fatalf("AllPolicies: %v", err)
	}
	if diff := cmp.Diff([]policy.Policy{storedPolicy(full), storedPolicy(global)}, all); diff != "" {
		t.Errorf("AllPolicies (-want +got):\n%s", diff)
	}
}

func testPolicyCreateErrors(t *testing.T, open func(t *testing.T) PolicyStore) {
	s := polStore(t, open)
	polCreate(t, s, pol("pol_1", "ten_a", "one"), pol("pol_g", "", "global"))
	tests := []struct {
		name string
		p    policy.Policy
		code errs.Code
	}{
		{"same id", pol("pol_1", "ten_b", "other"), errs.Conflict},
		{"same name in the tenant", pol("pol_2", "ten_a", "one"), errs.Conflict},
		{"same name among global policies", pol("pol_3", "", "global"), errs.Conflict},
		{"unknown tenant", pol("pol_4", "ten_nobody", "x"), errs.NotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			polCode(t, "CreatePolicy", s.CreatePolicy(t.Context(), tt.p), tt.code)
		})
	}
	// A name is unique per tenant only: the same name elsewhere, or globally and in a tenant, is fine.
	polCreate(t, s, pol("pol_5", "ten_b", "one"), pol("pol_6", "", "one"), pol("pol_7", "ten_a", "global"))
	if got := polGet(t, s, "pol_1"); got.TenantID != "ten_a" || got.Name != "one" {
		t.Errorf("a refused duplicate changed pol_1: %+v", got)
	}
}

func testPolicyList(t *testing.T, open func(t *testing.T) PolicyStore) {
	s := polStore(t, open)
	// Created out of ID order; listing is by ID.
	var want []policy.Policy
	for _, i := range []int{3, 1, 4, 0, 2} {
		p := pol(fmt.Sprintf("pol_a%d", i), "ten_a", fmt.Sprintf("a%d", i))
		polCreate(t, s, p)
		want = append(want, storedPolicy(p))
	}
	slices.SortFunc(want, func(a, b policy.Policy) int { return strings.Compare(a.ID, b.ID) })
	polCreate(t, s, pol("pol_b0", "ten_b", "b0"), pol("pol_g0", "", "g0"), pol("pol_g1", "", "g1"))

	var got []policy.Policy
	after := ""
	for range 10 {
		page, err := s.ListPolicies(t.Context(), "ten_a", after, 2)
		if err != nil {
			t.Fatalf("ListPolicies: %v", err)
		}
		if len(page) > 2 {
			t.Fatalf("ListPolicies returned %d policies, limit 2", len(page))
		}
		got = append(got, page...)
		if len(page) < 2 {
			break
		}
		after = page[len(page)-1].ID
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("tenant a's policies, paged (-want +got):\n%s", diff)
	}
	for _, tc := range []struct {
		tenant string
		want   []string
	}{
		{"ten_b", []string{"pol_b0"}},
		{"", []string{"pol_g0", "pol_g1"}},
		{"ten_nobody", nil},
	} {
		ps, err := s.ListPolicies(t.Context(), tc.tenant, "", 10)
		if err != nil {
			t.Fatalf("ListPolicies(%q): %v", tc.tenant, err)
		}
		var ids []string
		for _, p := range ps {
			ids = append(ids, p.ID)
		}
		if diff := cmp.Diff(tc.want, ids); diff != "" {
			t.Errorf("ListPolicies(%q) IDs (-want +got):\n%s", tc.tenant, diff)
		}
	}
}

func testPolicyUpdate(t *testing.T, open func(t *testing.T) PolicyStore) {
	s := polStore(t, open)
	polCreate(t, s, pol("pol_1", "ten_a", "one"), pol("pol_2", "ten_a", "two"))
	ctx := t.Context()

	next := pol("pol_1", "ten_a", "one renamed")
	next.Description, next.Effect, next.Expression, next.Enabled = "", policy.EffectAllow, "true", false
	next.UpdatedAt, next.Version = base.Add(time.Minute), 2
	if err := s.UpdatePolicy(ctx, next, 1); err != nil {
		t.Fatalf("UpdatePolicy: %v", err)
	}
	if diff := cmp.Diff(storedPolicy(next), polGet(t, s, "pol_1")); diff != "" {
		t.Errorf("updated policy (-want +got):\n%s", diff)
	}

	stale := next
	stale.Name, stale.Version = "stale", 3
	err := s.UpdatePolicy(ctx, stale, 1)
	polCode(t, "UpdatePolicy at a stale version", err, errs.Conflict)
	if !errors.Is(err, policy.ErrVersionConflict) {
		t.Errorf("UpdatePolicy at a stale version: %v does not wrap ErrVersionConflict", err)
	}

	taken := polGet(t, s, "pol_2")
	taken.Name, taken.Version = "one renamed", 2
	err = s.UpdatePolicy(ctx, taken, 1)
	polCode(t, "UpdatePolicy to a taken name", err, errs.Conflict)
	if errors.Is(err, policy.ErrVersionConflict) {
		t.Errorf("UpdatePolicy to a taken name: %v wraps ErrVersionConflict", err)
	}

	gone := pol("pol_gone", "ten_a", "gone")
	gone.Version = 2
	polCode(t, "UpdatePolicy of an unknown policy", s.UpdatePolicy(ctx, gone, 1), errs.NotFound)

	if got := polGet(t, s, "pol_1"); got.Name != "one renamed" || got.Version != 2 {
		t.Errorf("refused updates changed the policy: %+v", got)
	}
}

func testPolicyDelete(t *testing.T, open func(t *testing.T) PolicyStore) {
	s := polStore(t, open)
	polCreate(t, s, pol("pol_1", "ten_a", "one"))
	ctx := t.Context()
	err := s.DeletePolicy(ctx, "pol_1", 2)
	polCode(t, "DeletePolicy at a stale version", err, errs.Conflict)
	if !errors.Is(err, policy.ErrVersionConflict) {
		t.Errorf("DeletePolicy at a stale version: %v does not wrap ErrVersionConflict", err)
	}
	if err := s.DeletePolicy(ctx, "pol_1", 1); err != nil {
		t.Fatalf("DeletePolicy: %v", err)
	}
	_, err = s.Policy(ctx, "pol_1")
	polCode(t, "Policy after DeletePolicy", err, errs.NotFound)
	polCode(t, "DeletePolicy again", s.DeletePolicy(ctx, "pol_1", 1), errs.NotFound)
}

func testPolicyGeneration(t *testing.T, open func(t *testing.T) PolicyStore) {
	s := polStore(t, open)
	ctx := t.Context()
	g := polGeneration(t, s)
	moved := func(what string, want bool) {
		t.Helper()
		now := polGeneration(t, s)
		if (now != g) != want {
			t.Fatalf("after %s the generation went %d -> %d; want a change: %v", what, g, now, want)
		}
		g = now
	}
	polCreate(t, s, pol("pol_1", "ten_a", "one"), pol("pol_2", "ten_b", "two"))
	moved("CreatePolicy", true)
	_ = polGet(t, s, "pol_1")
	if _, err := s.AllPolicies(ctx); err != nil {
		t.Fatal(err)
	}
	moved("reads", false)
	upd := polGet(t, s, "pol_1")
	upd.Enabled, upd.Version = false, 2
	if err := s.UpdatePolicy(ctx, upd, 1); err != nil {
		t.Fatal(err)
	}
	moved("UpdatePolicy", true)
	_ = s.UpdatePolicy(ctx, upd, 1)
	_ = s.CreatePolicy(ctx, pol("pol_1", "ten_a", "dup"))
	moved("refused writes", false)
	if err := s.DeletePolicy(ctx, "pol_1", 2); err != nil {
		t.Fatal(err)
	}
	moved("DeletePolicy", true)
	// Deleting a tenant deletes its policies by foreign key: replicas must see that too.
	if err := s.DeleteTenant(ctx, "ten_b"); err != nil {
		t.Fatalf("DeleteTenant: %v", err)
	}
	moved("DeleteTenant", true)
	_, err := s.Policy(ctx, "pol_2")
	polCode(t, "a deleted tenant's policy", err, errs.NotFound)
}

func testPolicyConcurrentUpdates(t *testing.T, open func(t *testing.T) PolicyStore) {
	s := polStore(t, open)
	polCreate(t, s, pol("pol_1", "ten_a", "one"))
	const writers = 8
	var wg sync.WaitGroup
	errc := make(chan error, writers)
	for i := range writers {
		wg.Go(func() {
			// Read, change, compare-and-set; retry on a lost race, as the Service does not
			// (it reports it) but a client would.
			for {
				cur, err := s.Policy(t.Context(), "pol_1")
				if err != nil {
					errc <- err
					return
				}
				next := cur
				next.Description = fmt.Sprintf("writer %d", i)
				next.Version = cur.Version + 1
				err = s.UpdatePolicy(t.Context(), next, cur.Version)
				if errors.Is(err, policy.ErrVersionConflict) {
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
			t.Fatalf("concurrent UpdatePolicy: %v", err)
		}
	}
	if got := polGet(t, s, "pol_1"); got.Version != 1+writers {
		t.Fatalf("version after %d successful updates = %d, want %d (an update was lost)", writers, got.Version, 1+writers)
	}
}

func testPolicyTransactions(t *testing.T, open func(t *testing.T) PolicyStore) {
	s := polStore(t, open)
	ctx := t.Context()
	g := polGeneration(t, s)
	boom := errors.New("boom")
	err := s.InTx(ctx, func(ctx context.Context) error {
		if err := s.CreatePolicy(ctx, pol("pol_tx", "ten_a", "tx")); err != nil {
			return err
		}
		// The transaction sees its own write.
		if _, err := s.Policy(ctx, "pol_tx"); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("InTx = %v, want the callback's error", err)
	}
	_, err = s.Policy(ctx, "pol_tx")
	polCode(t, "a rolled-back policy", err, errs.NotFound)
	if now := polGeneration(t, s); now != g {
		t.Fatalf("a rolled-back create moved the generation %d -> %d", g, now)
	}
	if err := s.InTx(ctx, func(ctx context.Context) error { return s.CreatePolicy(ctx, pol("pol_tx", "ten_a", "tx")) }); err != nil {
		t.Fatalf("InTx: %v", err)
	}
	_ = polGet(t, s, "pol_tx")
	if now := polGeneration(t, s); now == g {
		t.Fatal("a committed create did not move the generation")
	}
}
