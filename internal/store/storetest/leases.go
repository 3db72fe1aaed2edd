package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/relay"
)

// LeaseTxStore is a lease store that can bind its statements to a transaction.
type LeaseTxStore interface {
	relay.LeaseStore
	InTx(ctx context.Context, fn func(ctx context.Context) error) error
}

// LeaseRacers is how many goroutines race for one lease in RunLeases: a PostgreSQL store needs
// that many pool connections for them to really run side by side.
const LeaseRacers = 8

// RunLeases checks relay.LeaseStore: taking a free, an expired and one's own lease, refusing
// another holder's running lease, releasing, exactly one winner among racing holders, and
// joining InTx. open must return a fresh migrated store on a database no other test uses.
func RunLeases(t *testing.T, open func(*testing.T) LeaseTxStore) {
	t.Run("lifecycle", func(t *testing.T) { t.Parallel(); testLeaseLifecycle(t, open(t)) })
	t.Run("names are independent", func(t *testing.T) { t.Parallel(); testLeaseNames(t, open(t)) })
	t.Run("racing holders", func(t *testing.T) { t.Parallel(); testLeaseRace(t, open(t)) })
	t.Run("invalid", func(t *testing.T) { t.Parallel(); testLeaseInvalid(t, open(t)) })
	t.Run("joins transaction", func(t *testing.T) { t.Parallel(); testLeaseTransaction(t, open(t)) })
}

// leaseStep is one call in a scripted lease history.
type leaseStep struct {
	op     string // "acquire" or "release"
	holder string
	at     time.Duration // after OutboxBase (acquire only)
	want   bool          // acquire's result
	why    string
}

func runLeaseSteps(t *testing.T, s relay.LeaseStore, name string, ttl time.Duration, steps []leaseStep) {
	t.Helper()
	ctx := t.Context()
	for i, st := range steps {
		switch st.op {
		case "acquire":
			got, err := s.AcquireLease(ctx, name, st.holder, ttl, OutboxBase.Add(st.at))
			if err != nil {
				t.Fatalf("step %d: AcquireLease(%s at +%s): %v", i, st.holder, st.at, err)
			}
			if got != st.want {
				t.Fatalf("step %d: AcquireLease(%s at +%s) = %t, want %t: %s", i, st.holder, st.at, got, st.want, st.why)
			}
		case "release":
			if err := s.ReleaseLease(ctx, name, st.holder); err != nil {
				t.Fatalf("step %d: ReleaseLease(%s): %v", i, st.holder, err)
			}
		default:
			t.Fatalf("step %d: unknown op %q", i, st.op)
		}
	}
}

func testLeaseLifecycle(t *testing.T, s LeaseTxStore) {
	const ttl = 10 * time.Second
	runLeaseSteps(t, s, "relay", ttl, []leaseStep{
		{"acquire", "a", 0, true, "the lease is free"},
		{"acquire", "b", 5 * time.Second, false, "a holds it until +10s"},
		{"acquire", "a", 5 * time.Second, true, "a renews its own lease, until +15s"},
		{"acquire", "b", 12 * time.Second, false, "a's renewal runs until +15s"},
		{"acquire", "b", 15 * time.Second, false, "a lease is held up to its expiry instant included"},
		{"acquire", "b", 15*time.Second + time.Microsecond, true, "a's lease expired; b takes it until +25s"},
		{"acquire", "a", 16 * time.Second, false, "b holds it now"},
		{"release", "a", 0, false, ""},
		{"acquire", "c", 16 * time.Second, false, "a release by a non-holder does nothing"},
		{"release", "b", 0, false, ""},
		{"acquire", "c", 16 * time.Second, true, "b released it, so c takes it at once"},
		{"acquire", "c", 17 * time.Second, true, "and renews it"},
		{"release", "c", 0, false, ""},
		{"release", "c", 0, false, "releasing a free lease does nothing"},
		{"acquire", "a", -time.Hour, true, "a free lease is taken whatever the time"},
	})
}

func testLeaseNames(t *testing.T, s LeaseTxStore) {
	ctx := t.Context()
	for _, name := range []string{"x", "y"} {
		ok, err := s.AcquireLease(ctx, name, "holder-"+name, time.Minute, OutboxBase)
		if err != nil || !ok {
			t.Fatalf("AcquireLease(%s) = %t, %v; want true", name, ok, err)
		}
	}
	if ok, err := s.AcquireLease(ctx, "x", "holder-y", time.Minute, OutboxBase); err != nil || ok {
		t.Fatalf("AcquireLease(x) by y's holder = %t, %v; want false", ok, err)
	}
	if err := s.ReleaseLease(ctx, "y", "holder-x"); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.AcquireLease(ctx, "y", "holder-x", time.Minute, OutboxBase); err != nil || ok {
		t.Fatalf("AcquireLease(y) after a foreign release = %t, %v; want false", ok, err)
	}
}

// testLeaseRace makes LeaseRacers holders race for a free lease, and then for an expired one,
// many times over: exactly one must win each race.
func testLeaseRace(t *testing.T, s LeaseTxStore) {
	ctx := t.Context()
	const rounds = 20
	race := func(name string, now time.Time) (winners []string) {
		var (
			mu    sync.Mutex
			wg    sync.WaitGroup
			start = make(chan struct{})
		)
		for i := range LeaseRacers {
			holder := fmt.Sprintf("racer-%d", i)
			wg.Go(func() {
				<-start
				ok, err := s.AcquireLease(ctx, name, holder, time.Minute, now)
				if err != nil {
					t.Errorf("AcquireLease(%s, %s): %v", name, holder, err)
					return
				}
				if ok {
					mu.Lock()
					winners = append(winners, holder)
					mu.Unlock()
				}
			})
		}
		close(start)
		wg.Wait()
		return winners
	}
	for i := range rounds {
		name := fmt.Sprintf("lease-%d", i)
		if w := race(name, OutboxBase); len(w) != 1 {
			t.Fatalf("round %d, free lease: winners %v, want exactly one", i, w)
		}
		// The winner's lease expires at +1m; all race again just after.
		if w := race(name, OutboxBase.Add(time.Minute+time.Second)); len(w) != 1 {
			t.Fatalf("round %d, expired lease: winners %v, want exactly one", i, w)
		}
	}
}

func testLeaseInvalid(t *testing.T, s LeaseTxStore) {
	long := string(make([]byte, relay.MaxLeaseName+1))
	tests := []struct {
		name, lease, holder string
		ttl                 time.Duration
	}{
		{"empty name", "", "a", time.Second},
		{"long name", long, "a", time.Second},
		{"empty holder", "relay", "", time.Second},
		{"zero ttl", "relay", "a", 0},
		{"negative ttl", "relay", "a", -time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, err := s.AcquireLease(t.Context(), tt.lease, tt.holder, tt.ttl, OutboxBase)
			if ok || errs.CodeOf(err) != errs.Invalid {
				t.Fatalf("AcquireLease = %t, %v; want false and code %q", ok, err, errs.Invalid)
			}
		})
	}
}

func testLeaseTransaction(t *testing.T, s LeaseTxStore) {
	ctx := t.Context()
	boom := errors.New("boom")
	err := s.InTx(ctx, func(ctx context.Context) error {
		ok, err := s.AcquireLease(ctx, "relay", "a", time.Minute, OutboxBase)
		if err != nil || !ok {
			return fmt.Errorf("AcquireLease in the transaction = %t, %v; want true", ok, err)
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("InTx = %v, want %v", err, boom)
	}
	if ok, err := s.AcquireLease(ctx, "relay", "b", time.Minute, OutboxBase); err != nil || !ok {
		t.Fatalf("AcquireLease after the rolled-back one = %t, %v; want true", ok, err)
	}
}
