package bus_test

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/bus"
)

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// lockedList is a list appended to by several goroutines.
type lockedList struct {
	mu  sync.Mutex
	got []int
}

func (l *lockedList) add(vs ...int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.got = append(l.got, vs...)
}

func (l *lockedList) list() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.got)
}

func TestQueueHandlesInPushOrderWithOneWorker(t *testing.T) {
	var handled lockedList
	q := bus.NewQueue(bus.QueueOptions[int]{Workers: 1, Capacity: 100, Handle: func(ms []int) { handled.add(ms...) }})
	want := make([]int, 100)
	for i := range want {
		want[i] = i
		q.Push(i)
	}
	waitFor(t, "every message handled", func() bool { return len(handled.list()) == len(want) })
	q.Stop()
	q.Wait()
	if got := handled.list(); !slices.Equal(got, want) {
		t.Fatalf("handled %v, want push order", got)
	}
}

// A stopping queue starts no new handler: what is queued goes to Release, not to Handle.
func TestQueueStopReleasesQueuedMessages(t *testing.T) {
	block := make(chan struct{})
	var handled, released lockedList
	q := bus.NewQueue(bus.QueueOptions[int]{Workers: 1, Capacity: 10,
		Handle:  func(ms []int) { handled.add(ms...); <-block },
		Release: func(ms []int) { released.add(ms...) },
	})
	for i := range 5 {
		q.Push(i)
	}
	waitFor(t, "the first handler to start", func() bool { return len(handled.list()) == 1 })
	q.Stop()
	close(block)
	q.Wait()
	if got := handled.list(); !slices.Equal(got, []int{0}) {
		t.Errorf("handled %v after Stop, want only the running [0]", got)
	}
	if got := released.list(); !slices.Equal(got, []int{1, 2, 3, 4}) {
		t.Errorf("released %v, want the queued [1 2 3 4]", got)
	}
}

// Queued messages are held while handlers finish; when no handler finishes during an interval
// (hung), the queue stops holding them and Tick reports no progress.
func TestQueueHoldsWaitingMessagesOnlyWhileHandlersProgress(t *testing.T) {
	const every = 20 * time.Millisecond
	release := make(chan struct{})
	var (
		mu       sync.Mutex
		held     [][]int
		ticks    []bool
		finished int
	)
	q := bus.NewQueue(bus.QueueOptions[int]{Workers: 1, Capacity: 10, HoldEvery: every,
		Handle: func(ms []int) {
			if ms[0] == 0 {
				<-release // hung until the test lets it go
			}
			mu.Lock()
			finished += len(ms)
			mu.Unlock()
		},
		Hold: func(ms []int) { mu.Lock(); held = append(held, slices.Clone(ms)); mu.Unlock() },
		Tick: func(progress bool) { mu.Lock(); ticks = append(ticks, progress); mu.Unlock() },
	})
	defer func() { q.Stop(); q.Wait() }()
	q.Push(0)
	q.Push(1)
	q.Push(2)
	// Handler 0 never finishes: after the first ticks, no progress, and 1 and 2 are not held.
	waitFor(t, "ticks without progress", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(ticks) >= 3
	})
	mu.Lock()
	if len(held) != 0 {
		t.Errorf("held %v while the only handler was hung", held)
	}
	for i, p := range ticks {
		if p {
			t.Errorf("tick %d reported progress while the handler was hung", i)
		}
	}
	mu.Unlock()
	close(release)
	waitFor(t, "the queued messages handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return finished == 3
	})
}

func TestQueueHoldsMessagesWaitingBehindProgressingHandlers(t *testing.T) {
	const every = 20 * time.Millisecond
	step := make(chan struct{})
	var (
		mu   sync.Mutex
		held []int
	)
	q := bus.NewQueue(bus.QueueOptions[int]{Workers: 1, Capacity: 10, HoldEvery: every,
		Handle: func([]int) { <-step }, // each handler finishes when the test lets it
		Hold:   func(ms []int) { mu.Lock(); held = append(held, ms...); mu.Unlock() },
		// One handler finishes after every tick: the handlers make progress, slowly.
		Tick: func(bool) {
			select {
			case step <- struct{}{}:
			default:
			}
		},
	})
	for i := range 6 {
		q.Push(i)
	}
	waitFor(t, "the last queued message held", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.Contains(held, 5)
	})
	mu.Lock()
	if slices.Contains(held, 0) {
		t.Errorf("held %v: message 0 was running, not waiting", held)
	}
	mu.Unlock()
	q.Stop()
	close(step)
	q.Wait()
}

// With Batch, a worker takes one message, waiting for it, then those already queued up to Batch,
// in push order, and hands them to one Handle call.
func TestQueueBatchesQueuedMessages(t *testing.T) {
	gate := make(chan struct{})
	var (
		mu    sync.Mutex
		calls [][]int
	)
	q := bus.NewQueue(bus.QueueOptions[int]{Workers: 1, Batch: 4, Capacity: 20,
		Handle: func(ms []int) {
			mu.Lock()
			calls = append(calls, slices.Clone(ms))
			first := len(calls) == 1
			mu.Unlock()
			if first {
				<-gate // the rest is pushed while the first call runs
			}
		},
	})
	q.Push(0)
	waitFor(t, "the first call", func() bool { mu.Lock(); defer mu.Unlock(); return len(calls) == 1 })
	for i := 1; i < 10; i++ {
		q.Push(i)
	}
	close(gate)
	waitFor(t, "every message handled", func() bool { mu.Lock(); defer mu.Unlock(); return len(calls) == 4 })
	q.Stop()
	q.Wait()
	want := [][]int{{0}, {1, 2, 3, 4}, {5, 6, 7, 8}, {9}}
	mu.Lock()
	defer mu.Unlock()
	if !slices.EqualFunc(calls, want, slices.Equal[[]int]) {
		t.Fatalf("calls %v, want %v", calls, want)
	}
}

func TestPlacesGrantPrefetchOnlyWhileHandlersFinish(t *testing.T) {
	p := bus.NewPlaces(2, 3)
	if n := p.TakeFree(); n != 2 {
		t.Fatalf("TakeFree = %d, want the 2 handler places (no prefetch before a handler finished)", n)
	}
	p.Finished()
	p.Finished()
	// Two handlers finished: two places back plus two granted for prefetch.
	if n := p.TakeFree(); n != 4 {
		t.Fatalf("TakeFree after two finished = %d, want 4", n)
	}
	for range 4 {
		p.Finished()
	}
	if n := p.TakeFree(); n != 5 {
		t.Fatalf("TakeFree = %d, want 5 (2 + prefetch 3 at most)", n)
	}
	p.Progress(false)
	p.Release(5)
	if n := p.TakeFree(); n != 2 {
		t.Fatalf("TakeFree after an interval without progress = %d, want 2 (prefetch withdrawn)", n)
	}
	done := make(chan struct{})
	close(done)
	if n, ok := p.Wait(done, true); ok || n != 0 {
		t.Fatalf("Wait after done = %d, %v; want 0, false", n, ok)
	}
}
