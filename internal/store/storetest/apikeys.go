package storetest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/apikey"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/user"
)

// RunAPIKeys runs the apikey.Store suite. open must return a fresh store with every migration
// applied, on a database no other test uses, and close it through t.Cleanup.
func RunAPIKeys(t *testing.T, open func(t *testing.T) DomainStore) {
	t.Run("round trip", func(t *testing.T) { t.Parallel(); testKeyRoundTrip(t, open) })
	t.Run("create errors", func(t *testing.T) { t.Parallel(); testKeyCreateErrors(t, open) })
	t.Run("list order and paging", func(t *testing.T) { t.Parallel(); testKeyList(t, open) })
	t.Run("rotate compare-and-set", func(t *testing.T) { t.Parallel(); testKeyRotate(t, open) })
	t.Run("revoke", func(t *testing.T) { t.Parallel(); testKeyRevoke(t, open) })
	t.Run("required rotation", func(t *testing.T) { t.Parallel(); testKeyRequireRotation(t, open) })
	t.Run("keys due", func(t *testing.T) { t.Parallel(); testKeysDue(t, open) })
	t.Run("touch keeps the latest use", func(t *testing.T) { t.Parallel(); testKeyTouch(t, open) })
	t.Run("concurrent touches", func(t *testing.T) { t.Parallel(); testKeyConcurrentTouches(t, open) })
	t.Run("transactions", func(t *testing.T) { t.Parallel(); testKeyTransactions(t, open) })
}

// domKey returns a never used, never rotated key of the tenant (and of the agent, unless "").
func domKey(id, tenantID, agentID string) apikey.Key {
	return apikey.Key{
		ID: id, TenantID: tenantID, AgentID: agentID, Name: "key " + id, Role: user.RoleOperator,
		Scopes: []string{"agents:read"}, CreatedBy: "usr_admin",
		Hash: []byte("hash-" + id), PepperVersion: "v1", CreatedAt: base,
	}
}

// storedKey is what an adapter returns for k: times in UTC at microsecond precision.
func storedKey(k apikey.Key) apikey.Key {
	for _, p := range []*time.Time{&k.PrevValidUntil, &k.CreatedAt, &k.ExpiresAt, &k.RevokedAt, &k.LastUsedAt, &k.RotateBy} {
		if !p.IsZero() {
			*p = stored(*p)
		}
	}
	return k
}

func domCreateKeys(t *testing.T, s DomainStore, ks ...apikey.Key) {
	t.Helper()
	for _, k := range ks {
		if err := s.CreateAPIKey(t.Context(), k); err != nil {
			t.Fatalf("CreateAPIKey(%s): %v", k.ID, err)
		}
	}
}

func domGetKey(t *testing.T, ctx context.Context, s DomainStore, id string) apikey.Key {
	t.Helper()
	k, err := s.APIKey(ctx, id)
	if err != nil {
		t.Fatalf("APIKey(%s): %v", id, err)
	}
	return k
}

// domKeyStore is a store with tenants ten_a and ten_b and an agent of each.
func domKeyStore(t *testing.T, open func(t *testing.T) DomainStore) DomainStore {
	s := open(t)
	domCreateTenants(t, s, domTenant("ten_a", "a", base), domTenant("ten_b", "b", base))
	domCreateAgents(t, s, domAgent("ten_a", "agt_a", "a", base), domAgent("ten_b", "agt_b", "b", base))
	return s
}

func testKeyRoundTrip(t *testing.T, open func(t *testing.T) DomainStore) {
	s := domKeyStore(t, open)
	full := apikey.Key{
		ID: "ak_full", TenantID: "ten_a", AgentID: "agt_a", Name: "déploiement CI", Role: user.RoleAdmin,
		Scopes: []string{"agents:read", "agents:write"}, CreatedBy: "usr_alice",
		Hash: []byte{0x00, 0xff, 0x10, 0x20}, PepperVersion: "v2",
		PrevHash: []byte("previous"), PrevPepperVersion: "v1", PrevValidUntil: base.Add(24 * time.Hour),
		CreatedAt: base, ExpiresAt: base.Add(90 * 24 * time.Hour), RevokedAt: base.Add(time.Hour),
		LastUsedAt: base.Add(time.Minute), RotateBy: base.Add(2 * time.Hour),
	}
	minimal := apikey.Key{
		ID: "ak_min", TenantID: "ten_b", Name: "k", Role: user.RoleViewer, CreatedBy: "usr_bob",
		Hash: []byte("h"), PepperVersion: "v1", CreatedAt: base.UTC(),
	}
	// No scopes read back as nil, whichever empty value was written.
	emptyScopes := domKey("ak_empty", "ten_a", "")
	emptyScopes.Scopes = []string{}
	emptyWant := storedKey(emptyScopes)
	emptyWant.Scopes = nil

	tests := []struct {
		name string
		in   apikey.Key
		want apikey.Key
	}{
		{"agent key with every field", full, storedKey(full)},
		{"tenant key with zero times", minimal, storedKey(minimal)},
		{"empty scopes", emptyScopes, emptyWant},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			domCreateKeys(t, s, tt.in)
			got := domGetKey(t, t.Context(), s, tt.in.ID)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("key (-want +got):\n%s", diff)
			}
			for _, tm := range []time.Time{got.PrevValidUntil, got.CreatedAt, got.ExpiresAt, got.RevokedAt, got.LastUsedAt, got.RotateBy} {
				if !tm.IsZero() {
					checkUTC(t, "time", tm)
				}
			}
		})
	}
	_, err := s.APIKey(t.Context(), "ak_nope")
	domCode(t, "APIKey of an unknown key", err, errs.NotFound)
}

func testKeyCreateErrors(t *testing.T, open func(t *testing.T) DomainStore) {
	s := domKeyStore(t, open)
	domCreateKeys(t, s, domKey("ak_1", "ten_a", ""))
	tests := []struct {
		name string
		in   apikey.Key
		code errs.Code
	}{
		{"id taken", domKey("ak_1", "ten_b", ""), errs.Conflict},
		{"unknown tenant", domKey("ak_2", "ten_nope", ""), errs.NotFound},
		{"unknown agent", domKey("ak_3", "ten_a", "agt_nope"), errs.NotFound},
		{"another tenant's agent", domKey("ak_4", "ten_a", "agt_b"), errs.NotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			domCode(t, "CreateAPIKey", s.CreateAPIKey(t.Context(), tt.in), tt.code)
			if tt.in.ID != "ak_1" {
				_, err := s.APIKey(t.Context(), tt.in.ID)
				domCode(t, "APIKey of a refused key", err, errs.NotFound)
			}
		})
	}
	if diff := cmp.Diff(storedKey(domKey("ak_1", "ten_a", "")), domGetKey(t, t.Context(), s, "ak_1")); diff != "" {
		t.Errorf("key after a refused duplicate (-want +got):\n%s", diff)
	}
}

func testKeyList(t *testing.T, open func(t *testing.T) DomainStore) {
	s := domKeyStore(t, open)
	ctx := t.Context()
	// Byte order puts "akB" before "aka"; a case-insensitive collation would not.
	ids := []string{"akc", "aka", "akB", "akb", "ak0"}
	for _, id := range ids {
		domCreateKeys(t, s, domKey(id, "ten_a", ""))
	}
	domCreateKeys(t, s, domKey("akab", "ten_b", ""), domKey("ak1", "ten_b", "agt_b"))
	order := []string{"ak0", "akB", "aka", "akb", "akc"}
	want := func(ids ...string) []apikey.Key {
		var out []apikey.Key
		for _, id := range ids {
			out = append(out, storedKey(domKey(id, "ten_a", "")))
		}
		return out
	}
	tests := []struct {
		name   string
		tenant string
		after  string
		limit  int
		want   []apikey.Key
	}{
		{"all", "ten_a", "", 100, want(order...)},
		{"limit", "ten_a", "", 2, want(order[:2]...)},
		{"after", "ten_a", "akB", 100, want(order[2:]...)},
		{"after an ID no key has", "ten_a", "aka0", 2, want("akb", "akc")},
		{"after the last", "ten_a", "akc", 100, nil},
		{"unknown tenant", "ten_nope", "", 100, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.ListAPIKeys(ctx, tt.tenant, tt.after, tt.limit)
			if err != nil {
				t.Fatalf("ListAPIKeys: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ListAPIKeys (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("other tenant", func(t *testing.T) {
		got, err := s.ListAPIKeys(ctx, "ten_b", "", 100)
		if err != nil {
			t.Fatalf("ListAPIKeys: %v", err)
		}
		if len(got) != 2 || got[0].ID != "ak1" || got[1].ID != "akab" {
			t.Errorf("ListAPIKeys(ten_b) = %v, want ak1, akab", got)
		}
	})
}

func testKeyRotate(t *testing.T, open func(t *testing.T) DomainStore) {
	s := domKeyStore(t, open)
	ctx := t.Context()
	orig := domKey("ak_1", "ten_a", "agt_a")
	orig.LastUsedAt = base.Add(time.Minute)
	domCreateKeys(t, s, orig)

	r1 := apikey.Rotation{Hash: []byte("hash-2"), PepperVersion: "v2", PrevHash: orig.Hash, PrevPepperVersion: "v1",
		PrevValidUntil: base.Add(24 * time.Hour)}
	if err := s.RotateAPIKey(ctx, orig.ID, orig.Hash, r1); err != nil {
		t.Fatalf("RotateAPIKey: %v", err)
	}
	want := orig
	want.Hash, want.PepperVersion = r1.Hash, r1.PepperVersion
	want.PrevHash, want.PrevPepperVersion, want.PrevValidUntil = r1.PrevHash, r1.PrevPepperVersion, r1.PrevValidUntil
	check := func(t *testing.T) {
		t.Helper()
		if diff := cmp.Diff(storedKey(want), domGetKey(t, ctx, s, orig.ID)); diff != "" {
			t.Errorf("key (-want +got):\n%s", diff)
		}
	}
	check(t)

	// A second rotation from the hash read before the first loses.
	lost := apikey.Rotation{Hash: []byte("hash-other"), PepperVersion: "v2", PrevHash: orig.Hash, PrevPepperVersion: "v1",
		PrevValidUntil: base.Add(48 * time.Hour)}
	domCode(t, "RotateAPIKey with a stale hash", s.RotateAPIKey(ctx, orig.ID, orig.Hash, lost), errs.Conflict)
	check(t)
	domCode(t, "RotateAPIKey of an unknown key", s.RotateAPIKey(ctx, "ak_nope", orig.Hash, lost), errs.NotFound)

	// Rotating again from the current hash replaces the previous secret too.
	r2 := apikey.Rotation{Hash: []byte("hash-3"), PepperVersion: "v2", PrevHash: r1.Hash, PrevPepperVersion: "v2",
		PrevValidUntil: base.Add(72 * time.Hour)}
	if err := s.RotateAPIKey(ctx, orig.ID, r1.Hash, r2); err != nil {
		t.Fatalf("second RotateAPIKey: %v", err)
	}
	want.Hash, want.PepperVersion = r2.Hash, r2.PepperVersion
	want.PrevHash, want.PrevPepperVersion, want.PrevValidUntil = r2.PrevHash, r2.PrevPepperVersion, r2.PrevValidUntil
	check(t)
}

func testKeyRequireRotation(t *testing.T, open func(t *testing.T) DomainStore) {
	s := domKeyStore(t, open)
	ctx := t.Context()
	k := domKey("ak_1", "ten_a", "")
	revoked := domKey("ak_2", "ten_a", "")
	revoked.RevokedAt = base
	domCreateKeys(t, s, k, revoked)
	want := k
	check := func(t *testing.T, what string) {
		t.Helper()
		if diff := cmp.Diff(storedKey(want), domGetKey(t, ctx, s, k.ID)); diff != "" {
			t.Errorf("%s: key (-want +got):\n%s", what, diff)
		}
	}
	by := base.Add(24 * time.Hour)
	if err := s.RequireAPIKeyRotation(ctx, k.ID, by); err != nil {
		t.Fatalf("RequireAPIKeyRotation: %v", err)
	}
	want.RotateBy = by
	check(t, "first deadline")
	// A later deadline does not postpone the one set; an earlier one replaces it.
	if err := s.RequireAPIKeyRotation(ctx, k.ID, by.Add(time.Hour)); err != nil {
		t.Fatalf("RequireAPIKeyRotation later: %v", err)
	}
	check(t, "later deadline ignored")
	earlier := base.Add(time.Hour)
	if err := s.RequireAPIKeyRotation(ctx, k.ID, earlier); err != nil {
		t.Fatalf("RequireAPIKeyRotation earlier: %v", err)
	}
	want.RotateBy = earlier
	check(t, "earlier deadline wins")
	domCode(t, "RequireAPIKeyRotation of a revoked key", s.RequireAPIKeyRotation(ctx, revoked.ID, by), errs.Conflict)
	if got := domGetKey(t, ctx, s, revoked.ID); !got.RotateBy.IsZero() {
		t.Errorf("revoked key got a deadline %v", got.RotateBy)
	}
	domCode(t, "RequireAPIKeyRotation of an unknown key", s.RequireAPIKeyRotation(ctx, "ak_nope", by), errs.NotFound)

	// A rotation meets the deadline: it is cleared.
	r := apikey.Rotation{Hash: []byte("hash-2"), PepperVersion: "v1", PrevHash: k.Hash, PrevPepperVersion: "v1", PrevValidUntil: by}
	if err := s.RotateAPIKey(ctx, k.ID, k.Hash, r); err != nil {
		t.Fatalf("RotateAPIKey: %v", err)
	}
	want.Hash, want.PrevHash, want.PrevPepperVersion, want.PrevValidUntil = r.Hash, r.PrevHash, r.PrevPepperVersion, r.PrevValidUntil
	want.RotateBy = time.Time{}
	check(t, "after rotation")
}

func testKeysDue(t *testing.T, open func(t *testing.T) DomainStore) {
	s := domKeyStore(t, open)
	ctx := t.Context()
	mk := func(id, tenant string, expires, rotateBy, revoked time.Time) apikey.Key {
		k := domKey(id, tenant, "")
		k.ExpiresAt, k.RotateBy, k.RevokedAt = expires, rotateBy, revoked
		return k
	}
	var none time.Time
	cut := base.Add(7 * 24 * time.Hour)
	keys := []apikey.Key{
		mk("ak_01", "ten_a", base.Add(time.Hour), none, none),                     // expires soon
		mk("ak_02", "ten_a", base.Add(30*24*time.Hour), none, none),               // expires later
		mk("ak_03", "ten_a", none, base.Add(2*time.Hour), none),                   // must be rotated soon
		mk("ak_04", "ten_a", base.Add(time.Hour), none, base),                     // revoked
		mk("ak_05", "ten_b", base.Add(-time.Hour), none, none),                    // expired already
		mk("ak_06", "ten_a", none, none, none),                                    // neither
		mk("ak_07", "ten_b", base.Add(30*24*time.Hour), cut.Add(time.Hour), none), // both later
	}
	domCreateKeys(t, s, keys...)
	ids := func(ks []apikey.Key) []string {
		var out []string
		for _, k := range ks {
			out = append(out, k.ID)
		}
		return out
	}
	for _, tt := range []struct {
		name, tenant, after string
		limit               int
		want                []string
	}{
		{"one tenant", "ten_a", "", 10, []string{"ak_01", "ak_03"}},
		{"every tenant", "", "", 10, []string{"ak_01", "ak_03", "ak_05"}},
		{"paged", "", "ak_01", 1, []string{"ak_03"}},
		{"other tenant", "ten_b", "", 10, []string{"ak_05"}},
	} {
		got, err := s.ListAPIKeysDue(ctx, tt.tenant, cut, tt.after, tt.limit)
		if err != nil {
			t.Fatalf("%s: ListAPIKeysDue: %v", tt.name, err)
		}
		if diff := cmp.Diff(tt.want, ids(got)); diff != "" {
			t.Errorf("%s: ids (-want +got):\n%s", tt.name, diff)
		}
	}
	got, err := s.ListAPIKeysDue(ctx, "ten_a", cut, "", 1)
	if err != nil || len(got) != 1 {
		t.Fatalf("ListAPIKeysDue: %v, %d keys", err, len(got))
	}
	if diff := cmp.Diff(storedKey(keys[0]), got[0]); diff != "" {
		t.Errorf("listed key (-want +got):\n%s", diff)
	}
}

func testKeyRevoke(t *testing.T, open func(t *testing.T) DomainStore) {
	s := domKeyStore(t, open)
	ctx := t.Context()
	k := domKey("ak_1", "ten_a", "")
	domCreateKeys(t, s, k)
	at := base.Add(time.Hour)
	if err := s.RevokeAPIKey(ctx, k.ID, at); err != nil {
		t.Fatalf("RevokeAPIKey: %v", err)
	}
	want := k
	want.RevokedAt = at
	domCode(t, "second RevokeAPIKey", s.RevokeAPIKey(ctx, k.ID, at.Add(time.Hour)), errs.Conflict)
	if diff := cmp.Diff(storedKey(want), domGetKey(t, ctx, s, k.ID)); diff != "" {
		t.Errorf("key (-want +got):\n%s", diff)
	}
	domCode(t, "RevokeAPIKey of an unknown key", s.RevokeAPIKey(ctx, "ak_nope", at), errs.NotFound)
}

func testKeyTouch(t *testing.T, open func(t *testing.T) DomainStore) {
	s := domKeyStore(t, open)
	ctx := t.Context()
	t0 := base.Add(time.Hour)
	never := domKey("ak_never", "ten_a", "")
	newer := domKey("ak_newer", "ten_a", "")
	newer.LastUsedAt = t0.Add(10 * time.Second)
	older := domKey("ak_older", "ten_b", "")
	older.LastUsedAt = t0.Add(10 * time.Second)
	twice := domKey("ak_twice", "ten_a", "")
	domCreateKeys(t, s, never, newer, older, twice)

	if err := s.TouchAPIKeys(ctx, nil); err != nil {
		t.Fatalf("TouchAPIKeys(nil): %v", err)
	}
	err := s.TouchAPIKeys(ctx, []apikey.Use{
		{ID: "ak_gone", At: t0},
		{ID: "ak_never", At: t0.Add(5 * time.Second)},
		{ID: "ak_newer", At: t0.Add(5 * time.Second)}, // older than the stored use: kept
		{ID: "ak_older", At: t0.Add(20 * time.Second)},
		// The contract promises distinct IDs; if one is listed twice, its latest use wins.
		{ID: "ak_twice", At: t0.Add(30 * time.Second)},
		{ID: "ak_twice", At: t0.Add(3 * time.Second)},
	})
	if err != nil {
		t.Fatalf("TouchAPIKeys: %v", err)
	}
	for _, c := range []struct {
		id   string
		want time.Time
	}{
		{"ak_never", t0.Add(5 * time.Second)},
		{"ak_newer", t0.Add(10 * time.Second)},
		{"ak_older", t0.Add(20 * time.Second)},
		{"ak_twice", t0.Add(30 * time.Second)},
	} {
		if got := domGetKey(t, ctx, s, c.id).LastUsedAt; !got.Equal(stored(c.want)) {
			t.Errorf("%s LastUsedAt = %v, want %v", c.id, got, stored(c.want))
		}
	}
	// Only last use changed.
	want := storedKey(older)
	want.LastUsedAt = stored(t0.Add(20 * time.Second))
	if diff := cmp.Diff(want, domGetKey(t, ctx, s, older.ID)); diff != "" {
		t.Errorf("touched key (-want +got):\n%s", diff)
	}

	t.Run("a batch larger than any bind-variable limit", func(t *testing.T) {
		const n = 1500
		uses := make([]apikey.Use, n)
		for i := range uses {
			uses[i] = apikey.Use{ID: fmt.Sprintf("ak_many%04d", i), At: t0.Add(time.Duration(i) * time.Millisecond)}
			if i%3 == 0 {
				domCreateKeys(t, s, domKey(uses[i].ID, "ten_a", ""))
			}
		}
		if err := s.TouchAPIKeys(ctx, uses); err != nil {
			t.Fatalf("TouchAPIKeys(%d uses): %v", n, err)
		}
		for i := 0; i < n; i += 3 * 97 {
			if got := domGetKey(t, ctx, s, uses[i].ID).LastUsedAt; !got.Equal(stored(uses[i].At)) {
				t.Errorf("%s LastUsedAt = %v, want %v", uses[i].ID, got, stored(uses[i].At))
			}
		}
	})
}

// testKeyConcurrentTouches has several flushers (replicas) write overlapping batches of uses in
// ascending ID order at once: none may fail (a deadlock would) and every key must end with its
// latest use.
func testKeyConcurrentTouches(t *testing.T, open func(t *testing.T) DomainStore) {
	s := domKeyStore(t, open)
	ctx := t.Context()
	const keys, flushers, rounds = 60, 8, 10
	for i := range keys {
		domCreateKeys(t, s, domKey(fmt.Sprintf("ak_%03d", i), "ten_a", ""))
	}
	var (
		mu     sync.Mutex
		latest = map[string]time.Time{}
		wg     sync.WaitGroup
	)
	errc := make(chan error, flushers)
	for f := range flushers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(f), 1))
			for range rounds {
				var uses []apikey.Use
				for i := range keys {
					if rng.IntN(2) == 0 {
						continue
					}
					at := stored(base.Add(time.Duration(rng.IntN(1_000_000)) * time.Millisecond))
					uses = append(uses, apikey.Use{ID: fmt.Sprintf("ak_%03d", i), At: at})
				}
				if len(uses) == 0 {
					continue
				}
				if err := s.TouchAPIKeys(ctx, uses); err != nil {
					errc <- err
					return
				}
				mu.Lock()
				for _, u := range uses {
					if u.At.After(latest[u.ID]) {
						latest[u.ID] = u.At
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatalf("TouchAPIKeys: %v", err)
	}
	for i := range keys {
		id := fmt.Sprintf("ak_%03d", i)
		if got := domGetKey(t, ctx, s, id).LastUsedAt; !got.Equal(latest[id]) {
			t.Errorf("%s LastUsedAt = %v, want the latest use %v", id, got, latest[id])
		}
	}
}

func testKeyTransactions(t *testing.T, open func(t *testing.T) DomainStore) {
	ctx := t.Context()
	boom := errors.New("boom")

	t.Run("rollback leaves nothing", func(t *testing.T) {
		s := domKeyStore(t, open)
		old := domKey("ak_old", "ten_a", "")
		domCreateKeys(t, s, old)
		err := s.InTx(ctx, func(ctx context.Context) error {
			if err := s.CreateAPIKey(ctx, domKey("ak_new", "ten_a", "agt_a")); err != nil {
				return err
			}
			if got, err := s.ListAPIKeys(ctx, "ten_a", "", 10); err != nil || len(got) != 2 {
				t.Errorf("ListAPIKeys inside the transaction = %d keys, %v; want 2", len(got), err)
			}
			r := apikey.Rotation{Hash: []byte("new-hash"), PepperVersion: "v2", PrevHash: old.Hash, PrevPepperVersion: "v1",
				PrevValidUntil: base.Add(time.Hour)}
			if err := s.RotateAPIKey(ctx, old.ID, old.Hash, r); err != nil {
				return err
			}
			if err := s.RevokeAPIKey(ctx, old.ID, base.Add(time.Minute)); err != nil {
				return err
			}
			if err := s.TouchAPIKeys(ctx, []apikey.Use{{ID: old.ID, At: base.Add(time.Second)}}); err != nil {
				return err
			}
			if got := domGetKey(t, ctx, s, old.ID); got.RevokedAt.IsZero() || got.LastUsedAt.IsZero() {
				t.Errorf("a read inside the transaction does not see its writes: %+v", got)
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("InTx = %v, want the callback's error", err)
		}
		got, err := s.ListAPIKeys(ctx, "ten_a", "", 10)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]apikey.Key{storedKey(old)}, got); diff != "" {
			t.Errorf("keys after rollback (-want +got):\n%s", diff)
		}
	})

	t.Run("commit", func(t *testing.T) {
		s := domKeyStore(t, open)
		k := domKey("ak_1", "ten_a", "agt_a")
		err := s.InTx(ctx, func(ctx context.Context) error {
			if err := s.CreateAPIKey(ctx, k); err != nil {
				return err
			}
			return s.TouchAPIKeys(ctx, []apikey.Use{{ID: k.ID, At: base.Add(time.Second)}})
		})
		if err != nil {
			t.Fatalf("InTx: %v", err)
		}
		want := k
		want.LastUsedAt = base.Add(time.Second)
		if diff := cmp.Diff(storedKey(want), domGetKey(t, ctx, s, k.ID)); diff != "" {
			t.Errorf("key (-want +got):\n%s", diff)
		}
	})
}
