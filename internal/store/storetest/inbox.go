package storetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/consumers"
	"github.com/nops-kernel/nops/internal/errs"
)

// InboxTxStore is an inbox that can bind its statements to a transaction.
type InboxTxStore interface {
	consumers.InboxStore
	InTx(ctx context.Context, fn func(ctx context.Context) error) error
}

// InboxClaimers is how many goroutines claim one event at once in RunInbox: a PostgreSQL store
// needs that many pool connections for them to really run side by side.
const InboxClaimers = 8

// RunInbox checks consumers.InboxStore and consumers.Once on it: a claim succeeds once per
// consumer and event, rolls back with its transaction, holds under concurrent transactions, and
// the purge deletes by age in batches of batch rows (the adapter's statement size). open must
// return a fresh migrated store on a database no other test uses.
func RunInbox(t *testing.T, open func(*testing.T) InboxTxStore, batch int) {
	t.Run("claims once", func(t *testing.T) { t.Parallel(); testInboxClaimsOnce(t, open(t)) })
	t.Run("rolls back", func(t *testing.T) { t.Parallel(); testInboxRollback(t, open(t)) })
	t.Run("concurrent claims", func(t *testing.T) { t.Parallel(); testInboxConcurrent(t, open(t)) })
	t.Run("waits for an open claim", func(t *testing.T) { t.Parallel(); testInboxOpenClaim(t, open) })
	t.Run("purge", func(t *testing.T) { t.Parallel(); testInboxPurge(t, open(t), batch) })
	t.Run("invalid", func(t *testing.T) { t.Parallel(); testInboxInvalid(t, open(t)) })
	t.Run("once", func(t *testing.T) { t.Parallel(); testOnce(t, open(t)) })
}

func claim(t *testing.T, ctx context.Context, s consumers.InboxStore, consumer, id string, want bool) {
	t.Helper()
	got, err := s.ClaimInbox(ctx, consumer, id, OutboxBase)
	if err != nil {
		t.Fatalf("ClaimInbox(%s, %s): %v", consumer, id, err)
	}
	if got != want {
		t.Fatalf("ClaimInbox(%s, %s) = %t, want %t", consumer, id, got, want)
	}
}

func testInboxClaimsOnce(t *testing.T, s InboxTxStore) {
	ctx := t.Context()
	claim(t, ctx, s, "stats", "evt_1", true)
	claim(t, ctx, s, "stats", "evt_1", false)
	claim(t, ctx, s, "audit", "evt_1", true) // another consumer applies it on its own
	claim(t, ctx, s, "stats", "evt_2", true)
	claim(t, ctx, s, "stats", "EVT_1", true) // ids are compared byte for byte
	claim(t, ctx, s, "audit", "evt_1", false)
}

func testInboxRollback(t *testing.T, s InboxTxStore) {
	ctx := t.Context()
	boom := errors.New("boom")
	err := s.InTx(ctx, func(ctx context.Context) error {
		claim(t, ctx, s, "stats", "evt_1", true)
		claim(t, ctx, s, "stats", "evt_1", false) // the transaction sees its own claim
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("InTx = %v, want %v", err, boom)
	}
	claim(t, ctx, s, "stats", "evt_1", true)
}

// testInboxConcurrent claims events from InboxClaimers transactions at once, each event by
// every goroutine: exactly one claim per event succeeds.
func testInboxConcurrent(t *testing.T, s InboxTxStore) {
	ctx := t.Context()
	const events = 20
	var wins [events]atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range InboxClaimers {
		wg.Go(func() {
			<-start
			for e := range events {
				err := s.InTx(ctx, func(ctx context.Context) error {
					ok, err := s.ClaimInbox(ctx, "stats", fmt.Sprintf("evt_%d", e), OutboxBase)
					if ok {
						wins[e].Add(1)
					}
					return err
				})
				if err != nil {
					t.Errorf("claim evt_%d: %v", e, err)
				}
			}
		})
	}
	close(start)
	wg.Wait()
	for e := range events {
		if n := wins[e].Load(); n != 1 {
			t.Errorf("evt_%d claimed %d times, want 1", e, n)
		}
	}
}

// testInboxOpenClaim claims an event in a transaction that stays open while a second transaction
// claims it too: the second one's answer must follow the first one's outcome, whichever it is.
func testInboxOpenClaim(t *testing.T, open func(*testing.T) InboxTxStore) {
	for _, commit := range []bool{true, false} {
		t.Run(fmt.Sprintf("first commits %t", commit), func(t *testing.T) {
			s := open(t)
			ctx := t.Context()
			claimed, release := make(chan struct{}), make(chan struct{})
			first := make(chan error, 1)
			go func() {
				first <- s.InTx(ctx, func(ctx context.Context) error {
					ok, err := s.ClaimInbox(ctx, "stats", "evt_1", OutboxBase)
					if err != nil || !ok {
						close(claimed)
						return fmt.Errorf("first claim = %t, %v; want true", ok, err)
					}
					close(claimed)
					<-release
					if !commit {
						return errors.New("rolled back")
					}
					return nil
				})
			}()
			<-claimed
			second := make(chan bool, 1)
			secondErr := make(chan error, 1)
			go func() {
				secondErr <- s.InTx(ctx, func(ctx context.Context) error {
					ok, err := s.ClaimInbox(ctx, "stats", "evt_1", OutboxBase)
					second <- ok
					return err
				})
			}()
			close(release)
			err := <-first
			if commit && err != nil {
				t.Fatalf("first transaction: %v", err)
			}
			if err := <-secondErr; err != nil {
				t.Fatalf("second transaction: %v", err)
			}
			if got := <-second; got == commit {
				t.Fatalf("second claim = %t after the first one's transaction committed=%t, want %t", got, commit, !commit)
			}
		})
	}
}

func testInboxPurge(t *testing.T, s InboxTxStore, batch int) {
	ctx := t.Context()
	cutoff := OutboxBase.Add(time.Hour)
	old := 2*batch + 3
	// One transaction: one commit rather than one fsync per claim.
	err := s.InTx(ctx, func(ctx context.Context) error {
		for i := range old {
			if _, err := s.ClaimInbox(ctx, "stats", fmt.Sprintf("old_%d", i), cutoff.Add(-time.Duration(i+1)*time.Microsecond)); err != nil {
				return err
			}
		}
		for i, at := range []time.Time{cutoff, cutoff.Add(time.Second)} {
			if _, err := s.ClaimInbox(ctx, "stats", fmt.Sprintf("new_%d", i), at); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("claims: %v", err)
	}
	n, err := s.PurgeInbox(ctx, cutoff)
	if err != nil {
		t.Fatalf("PurgeInbox: %v", err)
	}
	if n != int64(old) {
		t.Fatalf("PurgeInbox = %d, want %d", n, old)
	}
	// Claims made at the cutoff or later are kept; purged ones can be claimed again.
	claim(t, ctx, s, "stats", "new_0", false)
	claim(t, ctx, s, "stats", "new_1", false)
	claim(t, ctx, s, "stats", "old_0", true)
	claim(t, ctx, s, "stats", fmt.Sprintf("old_%d", old-1), true)
	if n, err := s.PurgeInbox(ctx, OutboxBase); err != nil || n != 0 {
		t.Fatalf("PurgeInbox with nothing older = %d, %v; want 0", n, err)
	}
}

func testInboxInvalid(t *testing.T, s InboxTxStore) {
	tests := []struct{ name, consumer, id string }{
		{"empty consumer", "", "evt_1"},
		{"long consumer", strings.Repeat("c", consumers.MaxConsumerName+1), "evt_1"},
		{"empty id", "stats", ""},
		{"long id", "stats", strings.Repeat("e", consumers.MaxEventID+1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, err := s.ClaimInbox(t.Context(), tt.consumer, tt.id, OutboxBase)
			if ok || errs.CodeOf(err) != errs.Invalid {
				t.Fatalf("ClaimInbox = %t, %v; want false and code %q", ok, err, errs.Invalid)
			}
		})
	}
}

// testOnce checks consumers.Once on the real store: apply runs once per event, in the claim's
// transaction, and its failure undoes the claim.
func testOnce(t *testing.T, s InboxTxStore) {
	ctx := t.Context()
	boom := errors.New("boom")
	calls := 0
	apply := func(err error) func(context.Context) error {
		return func(context.Context) error { calls++; return err }
	}
	steps := []struct {
		name        string
		applyErr    error
		wantApplied bool
		wantErr     error
		wantCalls   int
	}{
		{"first delivery fails", boom, false, boom, 1},
		{"retry applies", nil, true, nil, 2},
		{"redelivery is skipped", nil, false, nil, 2},
		{"a redelivery that would fail is skipped too", boom, false, nil, 2},
	}
	for _, st := range steps {
		applied, err := consumers.Once(ctx, s, s, "stats", "evt_1", apply(st.applyErr))
		if applied != st.wantApplied || !errors.Is(err, st.wantErr) || calls != st.wantCalls {
			t.Fatalf("%s: Once = %t, %v after %d calls; want %t, %v after %d", st.name, applied, err, calls, st.wantApplied, st.wantErr, st.wantCalls)
		}
	}
	if _, err := consumers.Once(ctx, s, s, "", "evt_1", apply(nil)); errs.CodeOf(err) != errs.Invalid {
		t.Fatalf("Once without a consumer: %v, want code %q", err, errs.Invalid)
	}
}
