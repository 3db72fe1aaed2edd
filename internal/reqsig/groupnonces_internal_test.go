package reqsig

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// txNonces is MemoryNonces with a transaction runner that counts transactions and can fail
// them, and a gate holding the first claim made outside a transaction.
type txNonces struct {
	MemoryNonces
	txs  atomic.Int64
	fail error
	hold chan struct{} // nil: no claim is held
	held atomic.Bool
}

func (f *txNonces) InTx(ctx context.Context, fn func(context.Context) error) error {
	f.txs.Add(1)
	if f.fail != nil {
		return f.fail
	}
	return fn(ctx)
}

func (f *txNonces) ClaimNonce(ctx context.Context, keyID, nonce string, expiresAt, now time.Time) (bool, error) {
	if f.hold != nil && f.held.CompareAndSwap(false, true) {
		<-f.hold
	}
	return f.MemoryNonces.ClaimNonce(ctx, keyID, nonce, expiresAt, now)
}

var gcNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// queued starts one claim, holds it in the store, queues claims of nonces behind it, and
// returns once they all wait; release lets the held claim finish. results collects every answer.
func queued(t *testing.T, f *txNonces, nonces []string) (g *GroupCommitNonces, release func() map[string][]claimResult) {
	t.Helper()
	f.hold = make(chan struct{})
	g = mustGroup(t, f, "")
	var (
		mu  sync.Mutex
		res = map[string][]claimResult{}
		wg  sync.WaitGroup
	)
	claim := func(n string) {
		defer wg.Done()
		ok, err := g.ClaimNonce(t.Context(), "key_A", n, gcNow.Add(time.Minute), gcNow)
		mu.Lock()
		res[n] = append(res[n], claimResult{ok, err})
		mu.Unlock()
	}
	wg.Add(1)
	go claim("first")
	waitFor(t, func() bool { return f.held.Load() })
	for _, n := range nonces {
		wg.Add(1)
		go claim(n)
	}
	waitFor(t, func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return len(g.pending) == len(nonces)
	})
	return g, func() map[string][]claimResult {
		close(f.hold)
		wg.Wait()
		return res
	}
}

type claimResult struct {
	ok  bool
	err error
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

// Negative cases first: a failed transaction accepts none of its claims; a nonce twice in one
// transaction is accepted once.

func TestGroupCommitFailedTransactionAcceptsNone(t *testing.T) {
	f := &txNonces{fail: errors.New("disk full")}
	var nonces []string
	for i := range 8 {
		nonces = append(nonces, fmt.Sprint("n", i))
	}
	_, release := queued(t, f, nonces)
	res := release()
	for _, n := range nonces {
		if r := res[n][0]; r.ok || r.err == nil {
			t.Fatalf("claim %s in a failed transaction: ok %v err %v", n, r.ok, r.err)
		}
	}
	if r := res["first"][0]; !r.ok || r.err != nil {
		t.Fatalf("the first claim, alone: %+v", r)
	}
}

func TestGroupCommitSameNonceOnce(t *testing.T) {
	f := &txNonces{}
	_, release := queued(t, f, []string{"dup", "dup", "dup", "other", "first"})
	res := release()
	for _, n := range []string{"dup", "first"} {
		accepted := 0
		for _, r := range res[n] {
			if r.err != nil {
				t.Fatal(r.err)
			}
			if r.ok {
				accepted++
			}
		}
		if accepted != 1 {
			t.Fatalf("nonce %s claimed %d times: accepted %d times, want once", n, len(res[n]), accepted)
		}
	}
	if !res["other"][0].ok {
		t.Fatal("a fresh nonce was refused")
	}
}

// The claims waiting while a commit runs are committed together, in one transaction.
func TestGroupCommitOneTransactionForWaitingClaims(t *testing.T) {
	f := &txNonces{}
	var nonces []string
	for i := range 20 {
		nonces = append(nonces, fmt.Sprint("n", i))
	}
	_, release := queued(t, f, nonces)
	res := release()
	for _, n := range nonces {
		if r := res[n][0]; !r.ok || r.err != nil {
			t.Fatalf("claim %s: %+v", n, r)
		}
	}
	if n := f.txs.Load(); n != 1 {
		t.Fatalf("20 waiting claims took %d transactions, want 1", n)
	}
	// Alone, a claim needs no transaction.
	g := mustGroup(t, f, DurabilityFull)
	if ok, err := g.ClaimNonce(t.Context(), "key_A", "alone", gcNow.Add(time.Minute), gcNow); !ok || err != nil {
		t.Fatalf("lone claim: %v %v", ok, err)
	}
	if n := f.txs.Load(); n != 1 {
		t.Fatalf("a lone claim opened a transaction (%d in all)", n)
	}
}

func TestGroupCommitBatchBounded(t *testing.T) {
	f := &txNonces{}
	var nonces []string
	for i := range MaxGroupCommit + 10 {
		nonces = append(nonces, fmt.Sprint("n", i))
	}
	_, release := queued(t, f, nonces)
	res := release()
	for _, n := range nonces {
		if r := res[n][0]; !r.ok || r.err != nil {
			t.Fatalf("claim %s: %+v", n, r)
		}
	}
	if n := f.txs.Load(); n != 2 {
		t.Fatalf("%d waiting claims took %d transactions, want 2 (at most %d a transaction)", len(nonces), n, MaxGroupCommit)
	}
}

func TestNewVerifierGroupsTransactionalStores(t *testing.T) {
	v, err := NewVerifier(fixedKeys{}, &txNonces{}, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := v.nonces.(*GroupCommitNonces); !ok {
		t.Fatalf("nonces of a TxRunner store: %T, want *GroupCommitNonces", v.nonces)
	}
	v, err = NewVerifier(fixedKeys{}, &MemoryNonces{}, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := v.nonces.(*MemoryNonces); !ok {
		t.Fatalf("nonces of a store without transactions: %T, want it as given", v.nonces)
	}
}

// mustGroup returns f's claims committed in groups with durability d.
func mustGroup(t *testing.T, f TxRunner, d Durability) *GroupCommitNonces {
	t.Helper()
	g, err := NewGroupCommitNonces(f.(NonceStore), f, d)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// durableTxNonces is txNonces that also commits with a chosen durability, and records which.
type durableTxNonces struct {
	txNonces
	mu   sync.Mutex
	seen []Durability
}

func (f *durableTxNonces) InNonceTx(ctx context.Context, d Durability, fn func(context.Context) error) error {
	f.mu.Lock()
	f.seen = append(f.seen, d)
	f.mu.Unlock()
	return f.InTx(ctx, fn)
}

// TestGroupCommitDurability: under DurabilityProcess every commit, a lone claim's too, goes
// through InNonceTx with that durability; under DurabilityFull the store's InTx is used and a
// lone claim commits by itself, as before.
func TestGroupCommitDurability(t *testing.T) {
	f := &durableTxNonces{}
	g := mustGroup(t, f, DurabilityProcess)
	if g.Durability() != DurabilityProcess {
		t.Fatalf("durability %q", g.Durability())
	}
	if ok, err := g.ClaimNonce(t.Context(), "key_A", "alone", gcNow.Add(time.Minute), gcNow); !ok || err != nil {
		t.Fatalf("lone claim: %v %v", ok, err)
	}
	if ok, err := g.ClaimNonce(t.Context(), "key_A", "alone", gcNow.Add(time.Minute), gcNow); ok || err != nil {
		t.Fatalf("second claim of one nonce: %v %v, want false", ok, err)
	}
	if len(f.seen) != 2 || f.seen[0] != DurabilityProcess || f.seen[1] != DurabilityProcess {
		t.Fatalf("commits through InNonceTx: %v, want two with %s", f.seen, DurabilityProcess)
	}

	full := &durableTxNonces{}
	g = mustGroup(t, full, "")
	if g.Durability() != DurabilityFull {
		t.Fatalf("default durability %q, want %s", g.Durability(), DurabilityFull)
	}
	if ok, err := g.ClaimNonce(t.Context(), "key_A", "alone", gcNow.Add(time.Minute), gcNow); !ok || err != nil {
		t.Fatalf("lone claim: %v %v", ok, err)
	}
	if len(full.seen) != 0 || full.txs.Load() != 0 {
		t.Fatalf("a lone claim under full durability: %v through InNonceTx, %d transactions; want none", full.seen, full.txs.Load())
	}

	// Process durability needs a store that can commit that way; unknown values are refused.
	if _, err := NewGroupCommitNonces(&txNonces{}, &txNonces{}, DurabilityProcess); err == nil {
		t.Fatal("process durability accepted on a store without InNonceTx")
	}
	if _, err := NewGroupCommitNonces(f, f, "fsync-sometimes"); err == nil {
		t.Fatal("unknown durability accepted")
	}
}

func TestNewVerifierDurability(t *testing.T) {
	v, err := NewVerifier(fixedKeys{}, &durableTxNonces{}, Config{NonceDurability: DurabilityProcess})
	if err != nil {
		t.Fatal(err)
	}
	if g, ok := v.nonces.(*GroupCommitNonces); !ok || g.Durability() != DurabilityProcess {
		t.Fatalf("nonces %T, want *GroupCommitNonces with process durability", v.nonces)
	}
	for name, tc := range map[string]struct {
		nonces NonceStore
		d      Durability
	}{
		"process without transactions": {&MemoryNonces{}, DurabilityProcess},
		"process without InNonceTx":    {&txNonces{}, DurabilityProcess},
		"unknown":                      {&durableTxNonces{}, "sometimes"},
	} {
		if _, err := NewVerifier(fixedKeys{}, tc.nonces, Config{NonceDurability: tc.d}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

type fixedKeys struct{}

func (fixedKeys) Lookup(context.Context, string) (Material, error) {
	return Material{}, errors.New("no keys")
}
