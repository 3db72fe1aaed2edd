package apikey

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// touchStore is a UsageStore that records each call and can fail chosen calls.
type touchStore struct {
	mu     sync.Mutex
	calls  [][]Use
	ctxErr []error // ctx.Err() seen by each call
	// fail, when set, decides the error of call number n (0-based, counting failed calls too).
	fail   func(n int) error
	n      int
	notify chan []Use
}

func newTouchStore() *touchStore { return &touchStore{notify: make(chan []Use, 64)} }

func (s *touchStore) TouchAPIKeys(ctx context.Context, uses []Use) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.n
	s.n++
	if s.fail != nil {
		if err := s.fail(n); err != nil {
			return err
		}
	}
	s.calls = append(s.calls, slices.Clone(uses))
	s.ctxErr = append(s.ctxErr, ctx.Err())
	s.notify <- slices.Clone(uses)
	return nil
}

func (s *touchStore) setFail(f func(n int) error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = f
}

func (s *touchStore) written() [][]Use {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// await returns the next batch written, failing the test after a deadline.
func (s *touchStore) await(t *testing.T) []Use {
	t.Helper()
	select {
	case uses := <-s.notify:
		return uses
	case <-time.After(10 * time.Second):
		t.Fatal("no batch was written before the deadline")
		return nil
	}
}

// manualTicker is a NewTicker whose ticks the test sends.
type manualTicker struct {
	c       chan time.Time
	stopped atomic.Bool
}

func newManualTicker() *manualTicker { return &manualTicker{c: make(chan time.Time)} }

func (m *manualTicker) newTicker(time.Duration) (<-chan time.Time, func()) {
	return m.c, func() { m.stopped.Store(true) }
}

var t0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func at(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }

func TestUsageCoalescesUses(t *testing.T) {
	store := newTouchStore()
	r := NewUsageRecorder(store, UsageOptions{})
	for _, u := range []Use{{"ak_b", at(1)}, {"ak_a", at(1)}, {"ak_a", at(3)}, {"ak_a", at(2)}, {"ak_c", at(0)}, {"ak_b", at(1)}} {
		r.Record(u.ID, u.At)
	}
	if r.Pending() != 3 {
		t.Fatalf("%d pending", r.Pending())
	}
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	want := [][]Use{{{"ak_a", at(3)}, {"ak_b", at(1)}, {"ak_c", at(0)}}}
	if diff := cmp.Diff(want, store.written()); diff != "" {
		t.Fatalf("writes (-want +got):\n%s", diff)
	}
	if err := r.Flush(t.Context()); err != nil || len(store.written()) != 1 || r.Pending() != 0 {
		t.Fatal("an empty flush wrote something")
	}
}

func TestUsageFlushesInBatches(t *testing.T) {
	store := newTouchStore()
	r := NewUsageRecorder(store, UsageOptions{BatchSize: 2})
	for _, id := range []string{"e", "c", "a", "d", "b"} {
		r.Record(id, at(1))
	}
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	want := [][]Use{{{"a", at(1)}, {"b", at(1)}}, {{"c", at(1)}, {"d", at(1)}}, {{"e", at(1)}}}
	if diff := cmp.Diff(want, store.written()); diff != "" {
		t.Fatalf("writes (-want +got):\n%s", diff)
	}
}

func TestUsageFailedFlushKeepsUses(t *testing.T) {
	store := newTouchStore()
	r := NewUsageRecorder(store, UsageOptions{BatchSize: 2})
	down := errors.New("database down")
	// The second call fails: the first batch is written, the rest stays pending.
	store.setFail(func(n int) error {
		if n == 1 {
			return down
		}
		return nil
	})
	for _, id := range []string{"a", "b", "c", "d"} {
		r.Record(id, at(1))
	}
	if len(r.full) != 1 {
		t.Fatal("a full batch did not ask for a flush")
	}
	<-r.full
	if err := r.Flush(t.Context()); !errors.Is(err, down) {
		t.Fatalf("Flush = %v, want the store error", err)
	}
	if r.Pending() != 2 {
		t.Fatalf("%d pending after a failed batch, want 2", r.Pending())
	}
	// While flushes fail, a full batch waits for the ticker instead of retrying at once.
	r.Record("e", at(1))
	if len(r.full) != 0 {
		t.Fatal("a full batch asked for a flush while the store is failing")
	}
	// A newer use wins over the requeued one, an older one does not.
	r.Record("c", at(5))
	r.Record("d", at(0))
	store.setFail(nil)
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	want := [][]Use{{{"a", at(1)}, {"b", at(1)}}, {{"c", at(5)}, {"d", at(1)}}, {{"e", at(1)}}}
	if diff := cmp.Diff(want, store.written()); diff != "" {
		t.Fatalf("writes (-want +got):\n%s", diff)
	}
	// After a success, a full batch asks for a flush again.
	r.Record("f", at(1))
	r.Record("g", at(1))
	if len(r.full) != 1 {
		t.Fatal("a full batch did not ask for a flush after the store recovered")
	}
}

// runRecorder starts r.Run and returns a function that waits for it to return.
func runRecorder(t *testing.T, ctx context.Context, r *UsageRecorder) (wait func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	return func() error {
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return before the deadline")
			return nil
		}
	}
}

func TestUsageRunFlushesOnTick(t *testing.T) {
	store := newTouchStore()
	tick := newManualTicker()
	r := NewUsageRecorder(store, UsageOptions{NewTicker: tick.newTicker})
	wait := runRecorder(t, t.Context(), r)
	r.Record("a", at(1))
	tick.c <- at(2)
	if diff := cmp.Diff([]Use{{"a", at(1)}}, store.await(t)); diff != "" {
		t.Fatal(diff)
	}
	r.Record("a", at(3))
	tick.c <- at(4)
	if diff := cmp.Diff([]Use{{"a", at(3)}}, store.await(t)); diff != "" {
		t.Fatal(diff)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	if !tick.stopped.Load() {
		t.Fatal("Run did not stop its ticker")
	}
}

func TestUsageRunFlushesFullBatch(t *testing.T) {
	store := newTouchStore()
	r := NewUsageRecorder(store, UsageOptions{BatchSize: 3, NewTicker: newManualTicker().newTicker})
	wait := runRecorder(t, t.Context(), r)
	for _, id := range []string{"a", "b", "c"} {
		r.Record(id, at(1))
	}
	if got := store.await(t); len(got) != 3 {
		t.Fatalf("full batch wrote %v", got)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := wait(); err != nil {
		t.Fatal(err)
	}
}

func TestUsageCloseFlushesAndStopsRun(t *testing.T) {
	store := newTouchStore()
	r := NewUsageRecorder(store, UsageOptions{NewTicker: newManualTicker().newTicker})
	wait := runRecorder(t, t.Context(), r)
	r.Record("a", at(1))
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	// Close returns after the final flush.
	if diff := cmp.Diff([][]Use{{{"a", at(1)}}}, store.written()); diff != "" {
		t.Fatal(diff)
	}
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	if err := r.Run(t.Context()); err == nil {
		t.Fatal("Run ran twice")
	}
}

func TestUsageCancelledRunFlushesWithLiveContext(t *testing.T) {
	store := newTouchStore()
	r := NewUsageRecorder(store, UsageOptions{NewTicker: newManualTicker().newTicker})
	ctx, cancel := context.WithCancel(t.Context())
	wait := runRecorder(t, ctx, r)
	r.Record("a", at(1))
	cancel()
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([][]Use{{{"a", at(1)}}}, store.written()); diff != "" {
		t.Fatal(diff)
	}
	if store.ctxErr[0] != nil {
		t.Fatalf("the final flush ran with a dead context: %v", store.ctxErr[0])
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestUsageFinalFlushErrorIsReturned(t *testing.T) {
	store := newTouchStore()
	down := errors.New("database down")
	store.setFail(func(int) error { return down })
	r := NewUsageRecorder(store, UsageOptions{NewTicker: newManualTicker().newTicker})
	wait := runRecorder(t, t.Context(), r)
	r.Record("a", at(1))
	if err := r.Close(); !errors.Is(err, down) {
		t.Fatalf("Close = %v, want the final flush error", err)
	}
	if err := wait(); !errors.Is(err, down) {
		t.Fatalf("Run = %v, want the final flush error", err)
	}
	if r.Pending() != 1 {
		t.Fatal("the unwritten use was dropped")
	}
}

func TestUsageCloseWithoutRunFlushes(t *testing.T) {
	store := newTouchStore()
	r := NewUsageRecorder(store, UsageOptions{})
	r.Record("a", at(1))
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if len(store.written()) != 1 {
		t.Fatal("Close without Run did not flush")
	}
}

func TestUsageConcurrentRecordAndFlush(t *testing.T) {
	store := newTouchStore()
	store.notify = make(chan []Use, 10000)
	r := NewUsageRecorder(store, UsageOptions{BatchSize: 4, NewTicker: newManualTicker().newTicker})
	wait := runRecorder(t, t.Context(), r)
	const workers, uses, keys = 8, 500, 10
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range uses {
				r.Record(fmt.Sprintf("k%d", i%keys), at(w*uses+i))
				if i%100 == 0 {
					if err := r.Flush(t.Context()); err != nil {
						t.Error(err)
					}
				}
			}
		})
	}
	wg.Wait()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	latest := map[string]time.Time{}
	for _, batch := range store.written() {
		if !slices.IsSortedFunc(batch, func(a, b Use) int { return strings.Compare(a.ID, b.ID) }) || len(batch) > 4 {
			t.Fatalf("batch %v unsorted or larger than BatchSize", batch)
		}
		for _, u := range batch {
			if u.At.After(latest[u.ID]) {
				latest[u.ID] = u.At
			}
		}
	}
	for k := range keys {
		id := fmt.Sprintf("k%d", k)
		// The last use of key k is by the last worker at its last i with i%keys == k.
		last := uses - keys + k
		if want := at((workers-1)*uses + last); !latest[id].Equal(want) {
			t.Fatalf("latest use of %s = %s, want %s", id, latest[id], want)
		}
	}
}
