package sqlite

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/reqsig"
)

// synchronous returns the writer connection's synchronous setting (1 NORMAL, 2 FULL).
func synchronous(t *testing.T, ctx context.Context, q querier) int {
	t.Helper()
	var n int
	if err := q.QueryRowContext(ctx, `PRAGMA synchronous`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestInNonceTxDurability: under process durability the claims' transaction runs with
// synchronous=NORMAL and the writer is back to FULL afterwards, also after fn failed or
// panicked; under full durability nothing changes; its claims commit (or roll back) as InTx's.
func TestInNonceTxDurability(t *testing.T) {
	s := openMigrated(t, Config{})
	ctx := context.Background()
	now := time.Now()
	if got := synchronous(t, ctx, s.writer); got != 2 {
		t.Fatalf("writer synchronous=%d before, want 2 (FULL)", got)
	}
	for _, tc := range []struct {
		d    reqsig.Durability
		want int
	}{{reqsig.DurabilityProcess, 1}, {reqsig.DurabilityFull, 2}} {
		err := s.InNonceTx(ctx, tc.d, func(ctx context.Context) error {
			if got := synchronous(t, ctx, s.w(ctx)); got != tc.want {
				t.Errorf("%s: synchronous=%d inside the transaction, want %d", tc.d, got, tc.want)
			}
			ok, err := s.ClaimNonce(ctx, "key_A", "n-"+string(tc.d), now.Add(time.Minute), now)
			if !ok || err != nil {
				t.Errorf("%s: claim %v %v", tc.d, ok, err)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", tc.d, err)
		}
		if got := synchronous(t, ctx, s.writer); got != 2 {
			t.Fatalf("%s: writer synchronous=%d afterwards, want 2 (FULL)", tc.d, got)
		}
		if ok, err := s.ClaimNonce(ctx, "key_A", "n-"+string(tc.d), now.Add(time.Minute), now); ok || err != nil {
			t.Fatalf("%s: the committed claim is not there: %v %v", tc.d, ok, err)
		}
	}

	// A failing fn rolls back; a panicking one too; the writer is FULL again either way.
	boom := errors.New("boom")
	err := s.InNonceTx(ctx, reqsig.DurabilityProcess, func(ctx context.Context) error {
		_, _ = s.ClaimNonce(ctx, "key_A", "rolled-back", now.Add(time.Minute), now)
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("failing fn: %v", err)
	}
	func() {
		defer func() { _ = recover() }()
		_ = s.InNonceTx(ctx, reqsig.DurabilityProcess, func(ctx context.Context) error {
			_, _ = s.ClaimNonce(ctx, "key_A", "panicked", now.Add(time.Minute), now)
			panic("boom")
		})
	}()
	if got := synchronous(t, ctx, s.writer); got != 2 {
		t.Fatalf("writer synchronous=%d after a failure, want 2 (FULL)", got)
	}
	for _, n := range []string{"rolled-back", "panicked"} {
		if ok, err := s.ClaimNonce(ctx, "key_A", n, now.Add(time.Minute), now); !ok || err != nil {
			t.Fatalf("nonce %s of a rolled-back transaction: %v %v, want it free", n, ok, err)
		}
	}

	// Inside a transaction it joins it.
	err = s.InTx(ctx, func(ctx context.Context) error {
		return s.InNonceTx(ctx, reqsig.DurabilityProcess, func(ctx context.Context) error {
			if got := synchronous(t, ctx, s.w(ctx)); got != 2 {
				t.Errorf("nested: synchronous=%d, want the outer transaction's 2", got)
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
}
