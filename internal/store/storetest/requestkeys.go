package storetest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/reqsig"
)

// RequestKeyStore is what the request key suite needs of an adapter: the domain stores (to make
// the tenants and agents keys belong to) and reqsig.Store.
type RequestKeyStore interface {
	DomainStore
	reqsig.Store
}

// RunRequestKeys runs the reqsig.Store suite. open must return a fresh store with every
// migration applied, on a database no other test uses, and close it through t.Cleanup.
func RunRequestKeys(t *testing.T, open func(t *testing.T) RequestKeyStore) {
	t.Run("round trip", func(t *testing.T) { t.Parallel(); testReqKeyRoundTrip(t, open) })
	t.Run("create errors", func(t *testing.T) { t.Parallel(); testReqKeyCreateErrors(t, open) })
	t.Run("list order and paging", func(t *testing.T) { t.Parallel(); testReqKeyList(t, open) })
	t.Run("rotate compare-and-set", func(t *testing.T) { t.Parallel(); testReqKeyRotate(t, open) })
	t.Run("revoke", func(t *testing.T) { t.Parallel(); testReqKeyRevoke(t, open) })
	t.Run("go with their agent and tenant", func(t *testing.T) { t.Parallel(); testReqKeyCascade(t, open) })
	t.Run("transactions", func(t *testing.T) { t.Parallel(); testReqKeyTransactions(t, open) })
}

// reqKeyStore is a store with tenants ten_a and ten_b and an agent of each.
func reqKeyStore(t *testing.T, open func(t *testing.T) RequestKeyStore) RequestKeyStore {
	s := open(t)
	domCreateTenants(t, s, domTenant("ten_a", "a", base), domTenant("ten_b", "b", base))
	domCreateAgents(t, s, domAgent("ten_a", "agt_a", "a", base), domAgent("ten_b", "agt_b", "b", base))
	return s
}

// reqHMACKey returns a never rotated hmac-sha256 key of the tenant (and agent, unless "").
func reqHMACKey(id, tenantID, agentID string) reqsig.Key {
	return reqsig.Key{
		ID: id, TenantID: tenantID, AgentID: agentID, Name: "key " + id, Alg: reqsig.AlgHMACSHA256,
		CreatedBy: "usr_admin", SealedSecret: []byte("sealed-" + id), Generation: 1, CreatedAt: base,
	}
}

func reqPublicKey(fill byte) ed25519.PublicKey {
	return bytes.Repeat([]byte{fill}, ed25519.PublicKeySize)
}

// storedReqKey is what an adapter returns for k: times in UTC at microsecond precision.
func storedReqKey(k reqsig.Key) reqsig.Key {
	for _, p := range []*time.Time{&k.PrevValidUntil, &k.CreatedAt, &k.ExpiresAt, &k.RevokedAt} {
		if !p.IsZero() {
			*p = stored(*p)
		}
	}
	return k
}

func reqCreate(t *testing.T, s RequestKeyStore, ks ...reqsig.Key) {
	t.Helper()
	for _, k := range ks {
		if err := s.CreateRequestKey(t.Context(), k); err != nil {
			t.Fatalf("CreateRequestKey(%s): %v", k.ID, err)
		}
	}
}

func reqGet(t *testing.T, ctx context.Context, s RequestKeyStore, id string) reqsig.Key {
	t.Helper()
	k, err := s.RequestKey(ctx, id)
	if err != nil {
		t.Fatalf("RequestKey(%s): %v", id, err)
	}
	return k
}

func testReqKeyRoundTrip(t *testing.T, open func(t *testing.T) RequestKeyStore) {
	s := reqKeyStore(t, open)
	full := reqsig.Key{
		ID: "rk_full", TenantID: "ten_a", AgentID: "agt_a", Name: "déploiement CI", Alg: reqsig.AlgEd25519,
		CreatedBy: "usr_alice", PublicKey: reqPublicKey(1), PrevPublicKey: reqPublicKey(2),
		PrevValidUntil: base.Add(24 * time.Hour), Generation: 7,
		CreatedAt: base, ExpiresAt: base.Add(90 * 24 * time.Hour), RevokedAt: base.Add(time.Hour),
	}
	hmacFull := reqHMACKey("rk_hmac", "ten_a", "")
	hmacFull.SealedSecret = []byte{0x01, 0x00, 0xff}
	hmacFull.PrevSealedSecret = []byte("previous sealed")
	hmacFull.PrevValidUntil = base.Add(time.Minute)
	minimal := reqsig.Key{
		ID: "rk_min", TenantID: "ten_b", Alg: reqsig.AlgEd25519, CreatedBy: "usr_bob",
		PublicKey: reqPublicKey(3), Generation: 1, CreatedAt: base.UTC(),
	}
	for _, in := range []reqsig.Key{full, hmacFull, minimal} {
		t.Run(in.ID, func(t *testing.T) {
			reqCreate(t, s, in)
			got := reqGet(t, t.Context(), s, in.ID)
			if diff := cmp.Diff(storedReqKey(in), got); diff != "" {
				t.Errorf("key (-want +got):\n%s", diff)
			}
			for _, tm := range []time.Time{got.PrevValidUntil, got.CreatedAt, got.ExpiresAt, got.RevokedAt} {
				if !tm.IsZero() {
					checkUTC(t, "time", tm)
				}
			}
		})
	}
	_, err := s.RequestKey(t.Context(), "rk_nope")
	domCode(t, "RequestKey of an unknown key", err, errs.NotFound)
}

func testReqKeyCreateErrors(t *testing.T, open func(t *testing.T) RequestKeyStore) {
	s := reqKeyStore(t, open)
	reqCreate(t, s, reqHMACKey("rk_1", "ten_a", ""))
	ctx := t.Context()
	domCode(t, "same id", s.CreateRequestKey(ctx, reqHMACKey("rk_1", "ten_b", "")), errs.Conflict)
	domCode(t, "unknown tenant", s.CreateRequestKey(ctx, reqHMACKey("rk_2", "ten_nope", "")), errs.NotFound)
	domCode(t, "agent of another tenant", s.CreateRequestKey(ctx, reqHMACKey("rk_3", "ten_a", "agt_b")), errs.NotFound)
	domCode(t, "unknown agent", s.CreateRequestKey(ctx, reqHMACKey("rk_4", "ten_a", "agt_nope")), errs.NotFound)
	// The schema refuses material that does not fit the algorithm.
	noSecret := reqHMACKey("rk_5", "ten_a", "")
	noSecret.SealedSecret = nil
	if err := s.CreateRequestKey(ctx, noSecret); err == nil {
		t.Error("an hmac-sha256 key without a sealed secret was stored")
	}
	shortPub := reqsig.Key{ID: "rk_6", TenantID: "ten_a", Alg: reqsig.AlgEd25519, CreatedBy: "u", PublicKey: []byte{1, 2}, Generation: 1, CreatedAt: base}
	if err := s.CreateRequestKey(ctx, shortPub); err == nil {
		t.Error("an ed25519 key with a 2-byte public key was stored")
	}
	for _, id := range []string{"rk_2", "rk_3", "rk_4", "rk_5", "rk_6"} {
		_, err := s.RequestKey(ctx, id)
		domCode(t, "RequestKey of a refused key", err, errs.NotFound)
	}
}

func testReqKeyList(t *testing.T, open func(t *testing.T) RequestKeyStore) {
	s := reqKeyStore(t, open)
	ctx := t.Context()
	// Inserted out of order; IDs differ in case-sensitive places, so the order must be bytewise.
	for _, id := range []string{"rk_c", "rk_a", "rk_B", "rk_b", "rk_d"} {
		reqCreate(t, s, reqHMACKey(id, "ten_a", ""))
	}
	reqCreate(t, s, reqHMACKey("rk_other", "ten_b", ""))
	ids := func(ks []reqsig.Key) []string {
		var out []string
		for _, k := range ks {
			out = append(out, k.ID)
		}
		return out
	}
	all, err := s.ListRequestKeys(ctx, "ten_a", "", 10)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"rk_B", "rk_a", "rk_b", "rk_c", "rk_d"}, ids(all)); diff != "" {
		t.Errorf("ListRequestKeys (-want +got):\n%s", diff)
	}
	page, err := s.ListRequestKeys(ctx, "ten_a", "rk_a", 2)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"rk_b", "rk_c"}, ids(page)); diff != "" {
		t.Errorf("second page (-want +got):\n%s", diff)
	}
	none, err := s.ListRequestKeys(ctx, "ten_nope", "", 10)
	if err != nil || none != nil {
		t.Errorf("ListRequestKeys of a tenant without keys = %v, %v; want nil, nil", none, err)
	}
}

func testReqKeyRotate(t *testing.T, open func(t *testing.T) RequestKeyStore) {
	s := reqKeyStore(t, open)
	ctx := t.Context()
	k := reqHMACKey("rk_rot", "ten_a", "")
	reqCreate(t, s, k)
	r := reqsig.Rotation{Generation: 2, SealedSecret: []byte("second"), PrevSealedSecret: k.SealedSecret, PrevValidUntil: base.Add(time.Hour)}
	if err := s.RotateRequestKey(ctx, k.ID, r); err != nil {
		t.Fatalf("RotateRequestKey: %v", err)
	}
	want := k
	want.Generation, want.SealedSecret, want.PrevSealedSecret, want.PrevValidUntil = 2, r.SealedSecret, r.PrevSealedSecret, r.PrevValidUntil
	if diff := cmp.Diff(storedReqKey(want), reqGet(t, ctx, s, k.ID)); diff != "" {
		t.Errorf("rotated key (-want +got):\n%s", diff)
	}
	// A rotation computed from generation 1 lost the race.
	stale := reqsig.Rotation{Generation: 2, SealedSecret: []byte("stale"), PrevSealedSecret: k.SealedSecret, PrevValidUntil: base}
	domCode(t, "stale rotation", s.RotateRequestKey(ctx, k.ID, stale), errs.Conflict)
	domCode(t, "rotation of an unknown key", s.RotateRequestKey(ctx, "rk_nope", r), errs.NotFound)
	if diff := cmp.Diff(storedReqKey(want), reqGet(t, ctx, s, k.ID)); diff != "" {
		t.Errorf("a refused rotation changed the key (-want +got):\n%s", diff)
	}

	// An ed25519 key rotates its public key.
	ed := reqsig.Key{ID: "rk_ed", TenantID: "ten_a", Alg: reqsig.AlgEd25519, CreatedBy: "u", PublicKey: reqPublicKey(1), Generation: 1, CreatedAt: base}
	reqCreate(t, s, ed)
	er := reqsig.Rotation{Generation: 2, PublicKey: reqPublicKey(2), PrevPublicKey: ed.PublicKey, PrevValidUntil: base.Add(time.Hour)}
	if err := s.RotateRequestKey(ctx, ed.ID, er); err != nil {
		t.Fatal(err)
	}
	got := reqGet(t, ctx, s, ed.ID)
	if !bytes.Equal(got.PublicKey, er.PublicKey) || !bytes.Equal(got.PrevPublicKey, ed.PublicKey) || got.Generation != 2 {
		t.Errorf("rotated ed25519 key = %+v", got)
	}

	// A revoked key does not rotate.
	if err := s.RevokeRequestKey(ctx, ed.ID, base); err != nil {
		t.Fatal(err)
	}
	er3 := reqsig.Rotation{Generation: 3, PublicKey: reqPublicKey(3), PrevPublicKey: er.PublicKey, PrevValidUntil: base}
	domCode(t, "rotation of a revoked key", s.RotateRequestKey(ctx, ed.ID, er3), errs.Conflict)

	// Of concurrent rotations from one generation, exactly one wins.
	c := reqHMACKey("rk_conc", "ten_a", "")
	reqCreate(t, s, c)
	var (
		wg   sync.WaitGroup
		wins atomic.Int32
	)
	for i := range 8 {
		wg.Go(func() {
			err := s.RotateRequestKey(ctx, c.ID, reqsig.Rotation{Generation: 2, SealedSecret: []byte(fmt.Sprint("s", i)), PrevSealedSecret: c.SealedSecret, PrevValidUntil: base})
			switch {
			case err == nil:
				wins.Add(1)
			case !errs.Is(err, errs.Conflict):
				t.Errorf("concurrent rotation: %v", err)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Errorf("%d concurrent rotations won, want 1", wins.Load())
	}
}

func testReqKeyRevoke(t *testing.T, open func(t *testing.T) RequestKeyStore) {
	s := reqKeyStore(t, open)
	ctx := t.Context()
	k := reqHMACKey("rk_rev", "ten_a", "")
	reqCreate(t, s, k)
	at := base.Add(time.Minute)
	if err := s.RevokeRequestKey(ctx, k.ID, at); err != nil {
		t.Fatal(err)
	}
	if got := reqGet(t, ctx, s, k.ID); !got.RevokedAt.Equal(stored(at)) {
		t.Errorf("RevokedAt = %v, want %v", got.RevokedAt, stored(at))
	}
	domCode(t, "second revocation", s.RevokeRequestKey(ctx, k.ID, at.Add(time.Hour)), errs.Conflict)
	if got := reqGet(t, ctx, s, k.ID); !got.RevokedAt.Equal(stored(at)) {
		t.Errorf("a second revocation moved RevokedAt to %v", got.RevokedAt)
	}
	domCode(t, "revocation of an unknown key", s.RevokeRequestKey(ctx, "rk_nope", at), errs.NotFound)
}

func testReqKeyCascade(t *testing.T, open func(t *testing.T) RequestKeyStore) {
	s := reqKeyStore(t, open)
	ctx := t.Context()
	reqCreate(t, s, reqHMACKey("rk_agent", "ten_a", "agt_a"), reqHMACKey("rk_tenant", "ten_a", ""))
	if err := s.DeleteAgent(ctx, "ten_a", "agt_a", 1); err != nil {
		t.Fatalf("DeleteAgent: %v", err)
	}
	_, err := s.RequestKey(ctx, "rk_agent")
	domCode(t, "key of a deleted agent", err, errs.NotFound)
	reqGet(t, ctx, s, "rk_tenant")
	if err := s.DeleteTenant(ctx, "ten_a"); err != nil {
		t.Fatalf("DeleteTenant: %v", err)
	}
	_, err = s.RequestKey(ctx, "rk_tenant")
	domCode(t, "key of a deleted tenant", err, errs.NotFound)
}

func testReqKeyTransactions(t *testing.T, open func(t *testing.T) RequestKeyStore) {
	s := reqKeyStore(t, open)
	ctx := t.Context()
	boom := errors.New("boom")
	err := s.InTx(ctx, func(ctx context.Context) error {
		if err := s.CreateRequestKey(ctx, reqHMACKey("rk_tx", "ten_a", "")); err != nil {
			return err
		}
		// Visible inside the transaction.
		if _, err := s.RequestKey(ctx, "rk_tx"); err != nil {
			return fmt.Errorf("read inside the transaction: %w", err)
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("InTx = %v, want boom", err)
	}
	_, err = s.RequestKey(ctx, "rk_tx")
	domCode(t, "key of a rolled back transaction", err, errs.NotFound)
}

// NonceOptions say what the nonce suite may check beyond the reqsig.NonceStore contract.
type NonceOptions struct {
	// CountRecords counts every record the store holds, live or dead. Nil for a store whose
	// records expire by themselves (Redis): PurgeNonces is then not checked.
	CountRecords func(ctx context.Context, s reqsig.NonceStore) (int, error)
}

// RunNonces is the conformance suite of reqsig.NonceStore. open must return an empty store that
// no other test uses and close it through t.Cleanup. Times are the wall clock: a Redis record
// really expires at its expiresAt.
func RunNonces(t *testing.T, open func(t *testing.T) reqsig.NonceStore, opts NonceOptions) {
	t.Run("once", func(t *testing.T) { t.Parallel(); testNonceOnce(t, open) })
	t.Run("concurrent claims", func(t *testing.T) { t.Parallel(); testNonceConcurrent(t, open) })
	t.Run("expiry", func(t *testing.T) { t.Parallel(); testNonceExpiry(t, open) })
	t.Run("purge", func(t *testing.T) { t.Parallel(); testNoncePurge(t, open, opts) })
}

func claimNonce(t *testing.T, s reqsig.NonceStore, keyID, nonce string, until, now time.Time) bool {
	t.Helper()
	ok, err := s.ClaimNonce(t.Context(), keyID, nonce, until, now)
	if err != nil {
		t.Fatalf("ClaimNonce(%s, %q): %v", keyID, nonce, err)
	}
	return ok
}

func testNonceOnce(t *testing.T, open func(t *testing.T) reqsig.NonceStore) {
	s := open(t)
	now := time.Now().Truncate(time.Microsecond).In(time.FixedZone("UTC+5", 5*60*60))
	until := now.Add(10 * time.Minute)
	if !claimNonce(t, s, "rk_a", "n-1", until, now) {
		t.Fatal("first claim refused")
	}
	for _, tc := range []struct {
		name         string
		keyID, nonce string
		want         bool
	}{
		{"same key and nonce", "rk_a", "n-1", false},
		{"same key, other nonce", "rk_a", "n-2", true},
		{"other key, same nonce", "rk_b", "n-1", true},
		{"nonce with spaces, colons and quotes", "rk_a", `a b:"c"\d`, true},
		{"that one again", "rk_a", `a b:"c"\d`, false},
		{"nonce that only differs in case", "rk_a", "N-1", true},
	} {
		if got := claimNonce(t, s, tc.keyID, tc.nonce, until, now.Add(time.Second)); got != tc.want {
			t.Errorf("%s: ClaimNonce = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func testNonceConcurrent(t *testing.T, open func(t *testing.T) reqsig.NonceStore) {
	s := open(t)
	now := time.Now()
	var (
		wg   sync.WaitGroup
		wins atomic.Int32
	)
	for range 16 {
		wg.Go(func() {
			ok, err := s.ClaimNonce(t.Context(), "rk_c", "race", now.Add(time.Minute), now)
			if err != nil {
				t.Errorf("ClaimNonce: %v", err)
			}
			if ok {
				wins.Add(1)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d of 16 concurrent claims of one nonce succeeded, want 1", wins.Load())
	}
}

func testNonceExpiry(t *testing.T, open func(t *testing.T) reqsig.NonceStore) {
	s := open(t)
	now := time.Now()
	if !claimNonce(t, s, "rk_e", "n", now.Add(200*time.Millisecond), now) {
		t.Fatal("first claim refused")
	}
	// Once its record is dead, the nonce may be claimed again (the signature that carried it is
	// by then refused for its age anyway). Poll: a Redis record expires on the server's clock.
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := time.Now()
		if claimNonce(t, s, "rk_e", "n", n.Add(time.Hour), n) {
			break
		}
		if n.After(deadline) {
			t.Fatal("the nonce was still refused 10s after its record expired")
		}
		time.Sleep(20 * time.Millisecond) // polling interval of a deadline-bounded wait
	}
	// The new record lives for its own expiry.
	if claimNonce(t, s, "rk_e", "n", time.Now().Add(time.Hour), time.Now()) {
		t.Fatal("a revived nonce was accepted twice")
	}
}

func testNoncePurge(t *testing.T, open func(t *testing.T) reqsig.NonceStore, opts NonceOptions) {
	s := open(t)
	p, ok := s.(reqsig.NoncePurger)
	if !ok || opts.CountRecords == nil {
		t.Skip("the store's records expire by themselves")
	}
	ctx := t.Context()
	now := time.Now()
	for i := range 1200 { // more than one purge batch
		if !claimNonce(t, s, "rk_p", fmt.Sprint("dead-", i), now.Add(-time.Duration(i+1)*time.Millisecond), now.Add(-time.Hour)) {
			t.Fatalf("claim %d refused", i)
		}
	}
	if !claimNonce(t, s, "rk_p", "live", now.Add(time.Hour), now) {
		t.Fatal("live claim refused")
	}
	n, err := p.PurgeNonces(ctx, now)
	if err != nil {
		t.Fatalf("PurgeNonces: %v", err)
	}
	if n != 1200 {
		t.Errorf("PurgeNonces deleted %d, want 1200", n)
	}
	left, err := opts.CountRecords(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if left != 1 {
		t.Errorf("%d records left after the purge, want 1 (the live one)", left)
	}
	if claimNonce(t, s, "rk_p", "live", now.Add(time.Hour), now) {
		t.Error("the purge let a live nonce be claimed again")
	}
}
