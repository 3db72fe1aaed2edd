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
	g = NewGroupCommitNonces(f, f)
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
	g := NewGroupCommitNonces(f, f)
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

type fixedKeys struct{}

func (fixedKeys) Lookup(context.Context, string) (Material, error) {
	return Material{}, errors.New("no keys")
}
