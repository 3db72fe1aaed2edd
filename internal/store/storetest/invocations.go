package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/invoke"
	"github.com/nops-kernel/nops/internal/tenant"
)

// InvocationStore is what RunInvocations needs: the async invocation store and the tenant store
// (invocations belong to tenants and go with them).
type InvocationStore interface {
	invoke.AsyncStore
	tenant.Store
}

// RunInvocations runs the invoke.AsyncStore suite. open must return a fresh store with every
// migration applied, on a database no other test uses, and close it through t.Cleanup.
func RunInvocations(t *testing.T, open func(t *testing.T) InvocationStore) {
	t.Run("round trip and tenant isolation", func(t *testing.T) { t.Parallel(); testInvocationRoundTrip(t, open) })
	t.Run("create errors", func(t *testing.T) { t.Parallel(); testInvocationCreateErrors(t, open) })
	t.Run("idempotency keys", func(t *testing.T) { t.Parallel(); testInvocationKeys(t, open) })
	t.Run("claim, lease and complete", func(t *testing.T) { t.Parallel(); testInvocationLifecycle(t, open) })
	t.Run("concurrent claims: one wins", func(t *testing.T) { t.Parallel(); testInvocationConcurrentClaims(t, open) })
	t.Run("release", func(t *testing.T) { t.Parallel(); testInvocationRelease(t, open) })
	t.Run("reclaimable", func(t *testing.T) { t.Parallel(); testInvocationReclaimable(t, open) })
	t.Run("purge", func(t *testing.T) { t.Parallel(); testInvocationPurge(t, open) })
	t.Run("a tenant's deletion takes its invocations", func(t *testing.T) { t.Parallel(); testInvocationTenantDeleted(t, open) })
	t.Run("transactions", func(t *testing.T) { t.Parallel(); testInvocationTransactions(t, open) })
}

// invStore is a store with tenants ten_a and ten_b.
func invStore(t *testing.T, open func(t *testing.T) InvocationStore) InvocationStore {
	t.Helper()
	s := open(t)
	for _, tn := range []tenant.Tenant{domTenant("ten_a", "a", base), domTenant("ten_b", "b", base)} {
		if err := s.CreateTenant(t.Context(), tn); err != nil {
			t.Fatalf("CreateTenant(%s): %v", tn.ID, err)
		}
	}
	return s
}

// pendingInv returns a pending invocation of the tenant created at base.
func pendingInv(tenantID, id string) invoke.Invocation {
	return invoke.Invocation{
		ID: id, TenantID: tenantID, Capability: "text.summarize", Status: invoke.StatusPending,
		RequestBody: []byte(`{"text":"hi"}`), RequestContentType: "application/json", RequestID: "req_1",
		CreatedAt: base, LeaseUntil: base.Add(time.Minute), ExpiresAt: base.Add(24 * time.Hour),
	}
}

// storedInv is what an adapter returns for inv: times in UTC at microsecond precision.
func storedInv(inv invoke.Invocation) invoke.Invocation {
	for _, p := range []*time.Time{&inv.CreatedAt, &inv.StartedAt, &inv.CompletedAt, &inv.LeaseUntil, &inv.ExpiresAt} {
		if !p.IsZero() {
			*p = stored(*p)
		}
	}
	return inv
}

// invEqual compares invocations, an empty body equal to none.
var invEqual = cmpopts.EquateEmpty()

func invCreate(t *testing.T, s InvocationStore, invs ...invoke.Invocation) {
	t.Helper()
	for _, inv := range invs {
		if err := s.CreateInvocation(t.Context(), inv); err != nil {
			t.Fatalf("CreateInvocation(%s): %v", inv.ID, err)
		}
	}
}

func invGet(t *testing.T, s InvocationStore, tenantID, id string) invoke.Invocation {
	t.Helper()
	inv, err := s.Invocation(t.Context(), tenantID, id)
	if err != nil {
		t.Fatalf("Invocation(%s, %s): %v", tenantID, id, err)
	}
	return inv
}

func invCode(t *testing.T, what string, err error, want errs.Code) {
	t.Helper()
	if got := errs.CodeOf(err); got != want {
		t.Fatalf("%s: error code %q (%v), want %q", what, got, err, want)
	}
}

func testInvocationRoundTrip(t *testing.T, open func(t *testing.T) InvocationStore) {
	s := invStore(t, open)
	ctx := t.Context()
	minimal := invoke.Invocation{
		ID: "inv_min", TenantID: "ten_a", Capability: "c", Status: invoke.StatusPending,
		CreatedAt: base, LeaseUntil: base, ExpiresAt: base.Add(time.Hour),
	}
	full := pendingInv("ten_a", "inv_full")
	full.IdempotencyKey = "key-1"
	full.RequestBody = []byte{0x00, 0xff, 0x10, '\n'}
	invCreate(t, s, minimal, full)
	for _, want := range []invoke.Invocation{minimal, full} {
		got := invGet(t, s, "ten_a", want.ID)
		if diff := cmp.Diff(storedInv(want), got, invEqual); diff != "" {
			t.Errorf("invocation %s (-want +got):\n%s", want.ID, diff)
		}
		checkUTC(t, want.ID+" CreatedAt", got.CreatedAt)
		checkUTC(t, want.ID+" LeaseUntil", got.LeaseUntil)
		checkUTC(t, want.ID+" ExpiresAt", got.ExpiresAt)
	}
	// Another tenant's invocation is not found, and neither is a missing one.
	_, err := s.Invocation(ctx, "ten_b", "inv_full")
	invCode(t, "another tenant's invocation", err, errs.NotFound)
	_, err = s.Invocation(ctx, "ten_a", "inv_none")
	invCode(t, "a missing invocation", err, errs.NotFound)
}

func testInvocationCreateErrors(t *testing.T, open func(t *testing.T) InvocationStore) {
	s := invStore(t, open)
	invCreate(t, s, pendingInv("ten_a", "inv_1"))
	err := s.CreateInvocation(t.Context(), pendingInv("ten_b", "inv_1"))
	invCode(t, "a taken id", err, errs.Conflict)
	if errors.Is(err, invoke.ErrKeyUsed) {
		t.Errorf("a taken id reads as a used idempotency key: %v", err)
	}
	err = s.CreateInvocation(t.Context(), pendingInv("ten_none", "inv_2"))
	invCode(t, "an unknown tenant", err, errs.NotFound)
}

func testInvocationKeys(t *testing.T, open func(t *testing.T) InvocationStore) {
	s := invStore(t, open)
	ctx := t.Context()
	a1 := pendingInv("ten_a", "inv_a1")
	a1.IdempotencyKey = "k"
	b1 := pendingInv("ten_b", "inv_b1")
	// Another tenant may use the same key; invocations without a key never clash.
	b1.IdempotencyKey = "k"
	invCreate(t, s, a1, b1, pendingInv("ten_a", "inv_a2"), pendingInv("ten_a", "inv_a3"))
	got, err := s.InvocationByKey(ctx, "ten_a", "k")
	if err != nil || got.ID != "inv_a1" {
		t.Fatalf("InvocationByKey(ten_a, k) = %s, %v; want inv_a1", got.ID, err)
	}
	_, err = s.InvocationByKey(ctx, "ten_a", "other")
	invCode(t, "an unused key", err, errs.NotFound)

	// The key taken inside a transaction: the error says so and the transaction goes on.
	err = s.InTx(ctx, func(ctx context.Context) error {
		dup := pendingInv("ten_a", "inv_a4")
		dup.IdempotencyKey = "k"
		err := s.CreateInvocation(ctx, dup)
		if !errs.Is(err, errs.Conflict) || !errors.Is(err, invoke.ErrKeyUsed) {
			return fmt.Errorf("a used key: %v, want a conflict wrapping ErrKeyUsed", err)
		}
		return s.CreateInvocation(ctx, pendingInv("ten_a", "inv_a5"))
	})
	if err != nil {
		t.Fatalf("transaction after a used key: %v", err)
	}
	invGet(t, s, "ten_a", "inv_a5")
	_, err = s.Invocation(ctx, "ten_a", "inv_a4")
	invCode(t, "the refused invocation", err, errs.NotFound)
}

func testInvocationLifecycle(t *testing.T, open func(t *testing.T) InvocationStore) {
	s := invStore(t, open)
	ctx := t.Context()
	in := pendingInv("ten_a", "inv_1")
	invCreate(t, s, in)
	now := base.Add(time.Second)

	// Pending → running.
	got, err := s.ClaimInvocation(ctx, "ten_a", "inv_1", now, now.Add(30*time.Second))
	if err != nil {
		t.Fatalf("first claim: %v", err)
	}
	want := in
	want.Status, want.StartedAt, want.LeaseUntil, want.Attempts = invoke.StatusRunning, now, now.Add(30*time.Second), 1
	if diff := cmp.Diff(storedInv(want), got, invEqual); diff != "" {
		t.Fatalf("claimed (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(storedInv(want), invGet(t, s, "ten_a", "inv_1"), invEqual); diff != "" {
		t.Fatalf("stored after the claim (-want +got):\n%s", diff)
	}

	// While the lease runs no one else claims it; the refusal carries the invocation.
	cur, err := s.ClaimInvocation(ctx, "ten_a", "inv_1", now.Add(29*time.Second), now.Add(time.Hour))
	invCode(t, "a claim during the lease", err, errs.Conflict)
	if !errors.Is(err, invoke.ErrNotClaimable) || cur.Status != invoke.StatusRunning || cur.Attempts != 1 {
		t.Fatalf("claim during the lease: %+v, %v", cur, err)
	}
	_, err = s.ClaimInvocation(ctx, "ten_b", "inv_1", now.Add(time.Hour), now.Add(2*time.Hour))
	invCode(t, "another tenant's claim", err, errs.NotFound)

	// The lease over (the worker died): the next claim takes it over, at attempt 2.
	later := now.Add(30 * time.Second)
	got, err = s.ClaimInvocation(ctx, "ten_a", "inv_1", later, later.Add(30*time.Second))
	if err != nil {
		t.Fatalf("claim after the lease: %v", err)
	}
	if got.Attempts != 2 || !got.StartedAt.Equal(stored(later)) {
		t.Fatalf("reclaimed: attempts %d, started %v", got.Attempts, got.StartedAt)
	}

	// The first run's result is refused: its claim is no longer current.
	res := invoke.InvocationResult{
		TenantID: "ten_a", ID: "inv_1", Attempt: 1, Status: invoke.StatusCompleted, CompletedAt: later.Add(time.Second),
		AgentID: "agt_1", ResponseStatus: 200, ResponseContentType: "text/plain", ResponseBody: []byte("stale"),
		ExpiresAt: later.Add(25 * time.Hour),
	}
	err = s.CompleteInvocation(ctx, res)
	invCode(t, "the stale run's result", err, errs.Conflict)
	if !errors.Is(err, invoke.ErrClaimLost) {
		t.Fatalf("the stale run's result: %v, want ErrClaimLost", err)
	}
	// The current run's is stored.
	res.Attempt, res.ResponseBody, res.Status = 2, []byte{0xff, 0x00}, invoke.StatusFailed
	res.ResponseStatus, res.ErrorStatus, res.ErrorDetail = 503, 503, "the agent answered 503"
	if err := s.CompleteInvocation(ctx, res); err != nil {
		t.Fatalf("complete: %v", err)
	}
	want.Status, want.Attempts, want.StartedAt, want.LeaseUntil = invoke.StatusFailed, 2, later, time.Time{}
	want.CompletedAt, want.AgentID, want.ResponseStatus, want.ResponseContentType = res.CompletedAt, "agt_1", 503, "text/plain"
	want.ResponseBody, want.ErrorStatus, want.ErrorDetail, want.ExpiresAt = res.ResponseBody, 503, res.ErrorDetail, res.ExpiresAt
	got = invGet(t, s, "ten_a", "inv_1")
	if diff := cmp.Diff(storedInv(want), got, invEqual); diff != "" {
		t.Fatalf("completed (-want +got):\n%s", diff)
	}
	checkUTC(t, "CompletedAt", got.CompletedAt)

	// Finished: never claimed or completed again, whatever the time.
	_, err = s.ClaimInvocation(ctx, "ten_a", "inv_1", later.Add(48*time.Hour), later.Add(49*time.Hour))
	if !errors.Is(err, invoke.ErrNotClaimable) {
		t.Fatalf("claim of a finished invocation: %v, want ErrNotClaimable", err)
	}
	if err := s.CompleteInvocation(ctx, res); !errors.Is(err, invoke.ErrClaimLost) {
		t.Fatalf("second completion: %v, want ErrClaimLost", err)
	}
	res.ID = "inv_none"
	invCode(t, "completion of a missing invocation", s.CompleteInvocation(ctx, res), errs.NotFound)
	res.ID, res.Status = "inv_1", invoke.StatusRunning
	invCode(t, "completion as running", s.CompleteInvocation(ctx, res), errs.Invalid)
}

func testInvocationConcurrentClaims(t *testing.T, open func(t *testing.T) InvocationStore) {
	s := invStore(t, open)
	const n = 8
	for i := range 4 {
		invCreate(t, s, pendingInv("ten_a", fmt.Sprintf("inv_%d", i)))
	}
	for i := range 4 {
		id := fmt.Sprintf("inv_%d", i)
		var wg sync.WaitGroup
		var mu sync.Mutex
		won, refused := 0, 0
		var other []error
		for range n {
			wg.Go(func() {
				_, err := s.ClaimInvocation(t.Context(), "ten_a", id, base.Add(time.Second), base.Add(time.Minute))
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					won++
				case errors.Is(err, invoke.ErrNotClaimable):
					refused++
				default:
					other = append(other, err)
				}
			})
		}
		wg.Wait()
		if won != 1 || refused != n-1 || len(other) > 0 {
			t.Fatalf("%s: %d claims won, %d refused, errors %v; want 1 and %d", id, won, refused, other, n-1)
		}
		if got := invGet(t, s, "ten_a", id); got.Attempts != 1 {
			t.Fatalf("%s: attempts %d after concurrent claims, want 1", id, got.Attempts)
		}
	}
}

func testInvocationRelease(t *testing.T, open func(t *testing.T) InvocationStore) {
	s := invStore(t, open)
	ctx := t.Context()
	invCreate(t, s, pendingInv("ten_a", "inv_1"))
	if _, err := s.ClaimInvocation(ctx, "ten_a", "inv_1", base, base.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	err := s.ReleaseInvocation(ctx, "ten_a", "inv_1", 2, base.Add(time.Second))
	if !errors.Is(err, invoke.ErrClaimLost) {
		t.Fatalf("release with another attempt: %v, want ErrClaimLost", err)
	}
	if err := s.ReleaseInvocation(ctx, "ten_a", "inv_1", 1, base.Add(time.Second)); err != nil {
		t.Fatalf("release: %v", err)
	}
	got := invGet(t, s, "ten_a", "inv_1")
	if got.Status != invoke.StatusPending || !got.LeaseUntil.Equal(stored(base.Add(time.Second))) || got.Attempts != 1 {
		t.Fatalf("released: status %s, lease %v, attempts %d", got.Status, got.LeaseUntil, got.Attempts)
	}
	// Pending again: the next claim takes it at once, as attempt 2.
	got, err = s.ClaimInvocation(ctx, "ten_a", "inv_1", base.Add(time.Second), base.Add(time.Hour))
	if err != nil || got.Attempts != 2 {
		t.Fatalf("claim after release: attempts %d, %v", got.Attempts, err)
	}
	invCode(t, "release of a missing invocation", s.ReleaseInvocation(ctx, "ten_a", "inv_none", 1, base), errs.NotFound)
}

func testInvocationReclaimable(t *testing.T, open func(t *testing.T) InvocationStore) {
	s := invStore(t, open)
	ctx := t.Context()
	lease := func(id, tenantID string, d time.Duration) invoke.Invocation {
		inv := pendingInv(tenantID, id)
		inv.LeaseUntil = base.Add(d)
		return inv
	}
	invCreate(t, s,
		lease("inv_late", "ten_a", 3*time.Second),
		lease("inv_early", "ten_b", time.Second),
		lease("inv_future", "ten_a", time.Hour),
		lease("inv_running", "ten_a", 0),
		lease("inv_done", "ten_a", 0),
	)
	// inv_running is claimed with a lease ending at +2 s; inv_done is finished.
	if _, err := s.ClaimInvocation(ctx, "ten_a", "inv_running", base, base.Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ClaimInvocation(ctx, "ten_a", "inv_done", base, base.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	err := s.CompleteInvocation(ctx, invoke.InvocationResult{TenantID: "ten_a", ID: "inv_done", Attempt: 1,
		Status: invoke.StatusCompleted, CompletedAt: base, ResponseStatus: 204, ExpiresAt: base.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.ReclaimableInvocations(ctx, base.Add(3*time.Second), 10)
	if err != nil {
		t.Fatalf("ReclaimableInvocations: %v", err)
	}
	want := []invoke.InvocationRef{
		{TenantID: "ten_b", ID: "inv_early", Capability: "text.summarize"},
		{TenantID: "ten_a", ID: "inv_running", Capability: "text.summarize"},
		{TenantID: "ten_a", ID: "inv_late", Capability: "text.summarize"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("reclaimable (-want +got):\n%s", diff)
	}
	got, err = s.ReclaimableInvocations(ctx, base.Add(3*time.Second), 2)
	if err != nil || len(got) != 2 {
		t.Fatalf("ReclaimableInvocations with limit 2: %v, %v", got, err)
	}
	got, err = s.ReclaimableInvocations(ctx, base, 10)
	if err != nil || len(got) != 0 {
		t.Fatalf("ReclaimableInvocations before any lease ends: %v, %v", got, err)
	}
}

func testInvocationPurge(t *testing.T, open func(t *testing.T) InvocationStore) {
	s := invStore(t, open)
	ctx := t.Context()
	finished := func(id string, expires time.Duration) {
		t.Helper()
		inv := pendingInv("ten_a", id)
		invCreate(t, s, inv)
		if _, err := s.ClaimInvocation(ctx, "ten_a", id, base, base.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		err := s.CompleteInvocation(ctx, invoke.InvocationResult{TenantID: "ten_a", ID: id, Attempt: 1,
			Status: invoke.StatusCompleted, CompletedAt: base, ResponseStatus: 200, ExpiresAt: base.Add(expires)})
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		finished(fmt.Sprintf("inv_old_%d", i), time.Duration(i)*time.Second)
	}
	finished("inv_young", time.Hour)
	oldPending := pendingInv("ten_a", "inv_pending")
	oldPending.ExpiresAt = base
	invCreate(t, s, oldPending)

	now := base.Add(10 * time.Second)
	n, err := s.PurgeInvocations(ctx, now, 3)
	if err != nil || n != 3 {
		t.Fatalf("first purge: %d, %v; want 3", n, err)
	}
	n, err = s.PurgeInvocations(ctx, now, 3)
	if err != nil || n != 2 {
		t.Fatalf("second purge: %d, %v; want 2", n, err)
	}
	n, err = s.PurgeInvocations(ctx, now, 3)
	if err != nil || n != 0 {
		t.Fatalf("third purge: %d, %v; want 0", n, err)
	}
	for i := range 5 {
		_, err := s.Invocation(ctx, "ten_a", fmt.Sprintf("inv_old_%d", i))
		invCode(t, "a purged invocation", err, errs.NotFound)
	}
	invGet(t, s, "ten_a", "inv_young")
	invGet(t, s, "ten_a", "inv_pending") // never purged before it finished
}

func testInvocationTenantDeleted(t *testing.T, open func(t *testing.T) InvocationStore) {
	s := invStore(t, open)
	invCreate(t, s, pendingInv("ten_a", "inv_a"), pendingInv("ten_b", "inv_b"))
	if err := s.DeleteTenant(t.Context(), "ten_b"); err != nil {
		t.Fatalf("DeleteTenant: %v", err)
	}
	_, err := s.Invocation(t.Context(), "ten_b", "inv_b")
	invCode(t, "a deleted tenant's invocation", err, errs.NotFound)
	invGet(t, s, "ten_a", "inv_a")
}

func testInvocationTransactions(t *testing.T, open func(t *testing.T) InvocationStore) {
	s := invStore(t, open)
	ctx := t.Context()
	boom := errors.New("boom")
	err := s.InTx(ctx, func(ctx context.Context) error {
		if err := s.CreateInvocation(ctx, pendingInv("ten_a", "inv_tx")); err != nil {
			return err
		}
		// The transaction sees its own write.
		if _, err := s.Invocation(ctx, "ten_a", "inv_tx"); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("InTx: %v, want boom", err)
	}
	_, err = s.Invocation(ctx, "ten_a", "inv_tx")
	invCode(t, "an invocation rolled back", err, errs.NotFound)
}
