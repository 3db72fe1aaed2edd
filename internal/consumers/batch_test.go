package consumers_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/consumers"
)

// heldTx counts the transactions run and holds the first one until released, so that the calls
// arriving meanwhile queue up behind it.
type heldTx struct {
	consumers.Store
	txs     atomic.Int32
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func newHeldTx(st consumers.Store) *heldTx {
	return &heldTx{Store: st, entered: make(chan struct{}), release: make(chan struct{})}
}

func (h *heldTx) InTx(ctx context.Context, fn func(ctx context.Context) error) error {
	h.txs.Add(1)
	first := false
	h.once.Do(func() { first = true })
	if first {
		close(h.entered)
		<-h.release
	}
	return h.Store.InTx(ctx, fn)
}

// queueBehindFirst starts the first call, waits until its commit holds, starts calls and waits
// until they all wait for a commit, then releases the first commit and waits for every call.
func queueBehindFirst(t *testing.T, b interface{ Waiting() int }, h *heldTx, first func() error, calls []func() error) []error {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(calls)+1)
	wg.Go(func() { errs[0] = first() })
	<-h.entered
	for i, c := range calls {
		wg.Go(func() { errs[i+1] = c() })
	}
	deadline := time.Now().Add(10 * time.Second)
	for b.Waiting() < len(calls) {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d calls queued", b.Waiting(), len(calls))
		}
		time.Sleep(2 * time.Millisecond)
	}
	close(h.release)
	wg.Wait()
	return errs
}

func count(st consumers.Store) func(id string) func(ctx context.Context) error {
	return func(string) func(ctx context.Context) error {
		return func(ctx context.Context) error { return st.IncrementEventStats(ctx, "ten_a", "t", time.Now()) }
	}
}

// TestBatcherGroupsCommits: the calls that arrive while a commit runs share the next
// transaction, and each distinct event is applied once (a duplicate within the group too).
func TestBatcherGroupsCommits(t *testing.T) {
	eachBackend(t, func(t *testing.T, st consumers.Store) {
		h := newHeldTx(st)
		b := consumers.NewBatcher(h, st, "batch-test", 64)
		apply := count(st)
		var calls []func() error
		for i := range 20 {
			id := fmt.Sprintf("evt_%02d", i)
			calls = append(calls, func() error { return b.Once(t.Context(), id, apply(id)) })
		}
		calls = append(calls, func() error { return b.Once(t.Context(), "evt_00", apply("evt_00")) })
		for i, err := range queueBehindFirst(t, b, h, func() error { return b.Once(t.Context(), "evt_first", apply("evt_first")) }, calls) {
			if err != nil {
				t.Errorf("call %d: %v", i, err)
			}
		}
		if got := h.txs.Load(); got != 2 {
			t.Errorf("%d transactions for 22 calls arriving during one commit, want 2", got)
		}
		if s := stats(t, st, "ten_a"); len(s) != 1 || s[0].Count != 21 {
			t.Fatalf("counted %+v, want 21 distinct events", s)
		}
	})
}

// TestBatcherFailureIsolated: when one application of a group fails, the others still commit
// (retried one by one) and only the failing call reports an error.
func TestBatcherFailureIsolated(t *testing.T) {
	eachBackend(t, func(t *testing.T, st consumers.Store) {
		h := newHeldTx(st)
		b := consumers.NewBatcher(h, st, "batch-test", 64)
		apply := count(st)
		var calls []func() error
		for i := range 5 {
			id := fmt.Sprintf("evt_%02d", i)
			calls = append(calls, func() error { return b.Once(t.Context(), id, apply(id)) })
		}
		calls = append(calls, func() error {
			return b.Once(t.Context(), "evt_bad", func(context.Context) error { return errors.New("effect failed") })
		})
		errs := queueBehindFirst(t, b, h, func() error { return b.Once(t.Context(), "evt_first", apply("evt_first")) }, calls)
		for i, err := range errs[:6] {
			if err != nil {
				t.Errorf("call %d: %v", i, err)
			}
		}
		if errs[6] == nil {
			t.Error("the failing application reported success")
		}
		if s := stats(t, st, "ten_a"); len(s) != 1 || s[0].Count != 6 {
			t.Fatalf("counted %+v, want 6 (the good events, once each)", s)
		}
		// The failed event was not claimed: a redelivery applies it.
		if err := b.Once(t.Context(), "evt_bad", apply("evt_bad")); err != nil {
			t.Fatal(err)
		}
		if s := stats(t, st, "ten_a"); s[0].Count != 7 {
			t.Fatalf("after the redelivery: %+v", s)
		}
	})
}
