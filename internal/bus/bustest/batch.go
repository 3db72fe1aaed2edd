package bustest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/errs"
)

// The batch cases run on adapters that implement bus.BatchSubscriber and are skipped on the
// others.

// batchBus returns e's bus as a BatchSubscriber, or skips the case.
func (e *env) batchBus(t *testing.T) bus.BatchSubscriber {
	t.Helper()
	bs, ok := e.b.(bus.BatchSubscriber)
	if !ok {
		t.Skip("the adapter has no batch consumers")
	}
	return bs
}

// subscribeBatch subscribes h with cfg on e's bus and stops the subscription when the test ends.
func (e *env) subscribeBatch(t *testing.T, cfg bus.ConsumerConfig, h bus.BatchHandler) bus.Subscription {
	t.Helper()
	bs := e.batchBus(t)
	ctx, cancel := context.WithCancel(context.Background())
	sub, err := bs.SubscribeBatch(ctx, cfg, h)
	if err != nil {
		cancel()
		t.Fatalf("SubscribeBatch(%s): %v", cfg.Name, err)
	}
	t.Cleanup(func() {
		defer cancel()
		sctx, scancel := context.WithTimeout(context.Background(), stopTimeout)
		defer scancel()
		if err := sub.Stop(sctx); err != nil {
			t.Errorf("Stop(%s): %v", cfg.Name, err)
		}
	})
	return sub
}

// batchConsumer is consumer(name) handing up to batch deliveries per call.
func batchConsumer(name string, concurrency, batch int) bus.ConsumerConfig {
	cfg := consumer(name)
	cfg.Concurrency, cfg.Batch = concurrency, batch
	return cfg
}

// batches records the batches a batch handler was handed (message ids, in order), on top of
// the deliveries its recorder records.
type batches struct {
	*recorder
	mu   sync.Mutex
	seen [][]string
}

func newBatches() *batches { return &batches{recorder: newRecorder()} }

// handler records each batch and each of its deliveries, then returns next's results (all nil
// when next is nil). next gets, per delivery, the number of this call for its message id.
func (b *batches) handler(next func(ctx context.Context, ds []bus.Delivery, calls []int) []error) bus.BatchHandler {
	return func(ctx context.Context, ds []bus.Delivery) []error {
		ids := make([]string, len(ds))
		calls := make([]int, len(ds))
		for i, d := range ds {
			ids[i] = d.ID
			calls[i] = b.add(d)
		}
		b.mu.Lock()
		b.seen = append(b.seen, ids)
		b.mu.Unlock()
		if next == nil {
			return make([]error, len(ds))
		}
		return next(ctx, ds, calls)
	}
}

func (b *batches) list() [][]string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.seen)
}

func (b *batches) largest() int {
	n := 0
	for _, ids := range b.list() {
		n = max(n, len(ids))
	}
	return n
}

func ids(msgs []bus.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.ID
	}
	return out
}

// testBatchBurst: a burst of messages goes to a batch consumer in batches of more than one and
// at most Batch, every message handled exactly once.
func testBatchBurst(t *testing.T, s *suite) {
	e := s.newEnv(t)
	e.batchBus(t)
	msgs := e.msgs(tenantA, typeA, "burst", 300)
	e.publish(t, msgs...) // before subscribing: the new consumer finds the whole burst waiting
	rec := newBatches()
	cfg := batchConsumer("burst", 2, 16)
	e.subscribeBatch(t, cfg, rec.handler(nil))
	rec.waitAll(t, "the burst", ids(msgs)...)
	e.settled(t, cfg.Name)
	for _, m := range msgs {
		checkAttempts(t, rec.recorder, m.ID, 1, "a message of a burst handled in batches")
	}
	if n := rec.largest(); n < 2 || n > cfg.Batch {
		t.Errorf("largest batch %d, want more than 1 and at most Batch %d (batches %v)", n, cfg.Batch, rec.list())
	}
}

// testBatchPerDelivery: each delivery of a batch is settled by its own result: a failure
// retries only that one, Terminal dead-letters only that one, one failing every time is
// dead-lettered after MaxDeliveries, and the others of their batches are handled once.
func testBatchPerDelivery(t *testing.T, s *suite) {
	e := s.newEnv(t)
	e.batchBus(t)
	msgs := e.msgs(tenantA, typeA, "mixed", 40)
	flaky, term, doomed := msgs[5].ID, msgs[12].ID, msgs[20].ID
	rec := newBatches()
	cfg := batchConsumer("mixed", 1, 32)
	cfg.MaxDeliveries = 3
	e.publish(t, msgs...)
	e.subscribeBatch(t, cfg, rec.handler(func(_ context.Context, ds []bus.Delivery, calls []int) []error {
		out := make([]error, len(ds))
		for i, d := range ds {
			switch {
			case d.ID == flaky && calls[i] == 1:
				out[i] = errors.New("flaky once")
			case d.ID == term:
				out[i] = bus.Terminal(errors.New("never: term-3c1d"))
			case d.ID == doomed:
				out[i] = errors.New("always: doomed-81b0")
			}
		}
		return out
	}))
	e.waitDLQCount(t, tenantA, 2)
	rec.waitCalls(t, flaky, 2)
	e.sentinel(t, tenantA, typeA, rec.recorder)
	e.settled(t, cfg.Name)
	for _, m := range msgs {
		switch m.ID {
		case flaky:
			checkAttempts(t, rec.recorder, m.ID, 2, "a delivery failing once in a batch")
		case doomed:
			checkAttempts(t, rec.recorder, m.ID, 3, "a delivery always failing in a batch (MaxDeliveries 3)")
		default:
			checkAttempts(t, rec.recorder, m.ID, 1, "a delivery of a batch")
		}
	}
	dls := e.listAll(t, bus.DLQFilter{}, 10)
	got := map[string]bus.DeadLetter{}
	for _, dl := range dls {
		got[dl.Message.ID] = dl
	}
	if len(dls) != 2 || got[term].Attempts != 1 || got[doomed].Attempts != 3 {
		t.Fatalf("dead letters %+v, want %s after 1 attempt and %s after 3", dls, term, doomed)
	}
	checkDeadLetter(t, e, got[term], msgs[12], cfg.Name, 1, "term-3c1d", rec.of(term)[0])
	checkDeadLetter(t, e, got[doomed], msgs[20], cfg.Name, 3, "doomed-81b0", rec.of(doomed)[2])
}

// testBatchPanic: a panicking batch handler fails every delivery of its batch (a failed attempt
// each), and only those.
func testBatchPanic(t *testing.T, s *suite) {
	e := s.newEnv(t)
	e.batchBus(t)
	msgs := e.msgs(tenantA, typeA, "fragile", 30)
	bomb := msgs[10].ID
	rec := newBatches()
	var (
		mu       sync.Mutex
		blownUp  []string
		exploded bool
	)
	cfg := batchConsumer("fragile", 1, 8)
	e.publish(t, msgs...)
	e.subscribeBatch(t, cfg, rec.handler(func(_ context.Context, ds []bus.Delivery, calls []int) []error {
		for i, d := range ds {
			if d.ID == bomb && calls[i] == 1 {
				mu.Lock()
				exploded = true
				for _, x := range ds {
					blownUp = append(blownUp, x.ID)
				}
				mu.Unlock()
				panic("kaboom-batch")
			}
		}
		return make([]error, len(ds))
	}))
	rec.waitAll(t, "every message", ids(msgs)...)
	rec.waitCalls(t, bomb, 2)
	e.sentinel(t, tenantA, typeA, rec.recorder)
	e.settled(t, cfg.Name)
	mu.Lock()
	defer mu.Unlock()
	if !exploded {
		t.Fatal("the handler never panicked")
	}
	for _, m := range msgs {
		if slices.Contains(blownUp, m.ID) {
			checkAttempts(t, rec.recorder, m.ID, 2, "a delivery of the batch that panicked")
		} else {
			checkAttempts(t, rec.recorder, m.ID, 1, "a delivery of another batch")
		}
	}
	if n, err := e.b.CountDeadLetters(t.Context(), ""); err != nil || n != 0 {
		t.Errorf("CountDeadLetters = %d, %v; want 0", n, err)
	}
}

// testBatchMaxDeliveries: a delivery beyond MaxDeliveries (its batch hung past AckWait) is
// dead-lettered without being handed to the handler again.
func testBatchMaxDeliveries(t *testing.T, s *suite) {
	e := s.newEnv(t)
	e.batchBus(t)
	m := e.msg(tenantA, typeA, "orphan")
	cfg := batchConsumer("survivor", 1, 8)
	cfg.AckWait = shortAckWait
	cfg.MaxDeliveries = 1
	got, release := make(chan struct{}), make(chan struct{})
	defer close(release)
	var once sync.Once
	var hungCalls atomic.Int32
	e.subscribeBatch(t, cfg, func(ctx context.Context, ds []bus.Delivery) []error {
		hungCalls.Add(1)
		once.Do(func() { close(got) })
		<-ctx.Done() // hung past AckWait…
		<-release    // …until the test ends
		return make([]error, len(ds))
	})
	e.publish(t, m)
	select {
	case <-got:
	case <-time.After(waitTimeout):
		t.Fatalf("the message was not delivered within %s", waitTimeout)
	}
	rec2 := newBatches()
	e.subscribeBatch(t, cfg, rec2.handler(nil))
	e.waitDLQCount(t, tenantA, 1)
	if n := rec2.count(m.ID); n != 0 {
		t.Errorf("the delivery beyond MaxDeliveries was handed to the handler %d times, want 0", n)
	}
	dls := e.listAll(t, bus.DLQFilter{}, 10)
	// The hung member may have fetched later deliveries too (its other places were free), and
	// let them expire: any delivery after the first is beyond MaxDeliveries.
	if len(dls) != 1 || dls[0].Message.ID != m.ID || dls[0].Attempts < 2 {
		t.Errorf("dead letters %+v, want %s after 2 attempts or more", dls, m.ID)
	}
	if n := hungCalls.Load(); n != 1 {
		t.Errorf("the hung member's handler was called %d times, want 1", n)
	}
}

// testBatchStop: Stop waits for the running batch and settles it; the messages no batch started
// go to the next subscription, each once.
func testBatchStop(t *testing.T, s *suite) {
	e := s.newEnv(t)
	e.batchBus(t)
	msgs := e.msgs(tenantA, typeA, "stop", 12)
	started, release := make(chan struct{}), make(chan struct{})
	var once, closeRelease sync.Once
	defer closeRelease.Do(func() { close(release) })
	rec1 := newBatches()
	cfg := batchConsumer("stopper", 1, 3)
	e.publish(t, msgs...)
	sub := e.subscribeBatch(t, cfg, rec1.handler(func(_ context.Context, ds []bus.Delivery, _ []int) []error {
		once.Do(func() { close(started) })
		<-release
		return make([]error, len(ds))
	}))
	select {
	case <-started:
	case <-time.After(waitTimeout):
		t.Fatalf("no batch was delivered within %s", waitTimeout)
	}
	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		defer cancel()
		stopped <- sub.Stop(ctx)
	}()
	select {
	case err := <-stopped:
		t.Fatalf("Stop returned (%v) while a batch was still running", err)
	case <-time.After(300 * time.Millisecond): // a lower bound: Stop may not return before the handler does
	}
	closeRelease.Do(func() { close(release) })
	if err := <-stopped; err != nil {
		t.Fatalf("Stop: %v", err)
	}
	first := rec1.list()
	if len(first) != 1 {
		t.Fatalf("the stopped subscription ran batches %v, want only the first", first)
	}
	var rest []string
	for _, m := range msgs {
		if !slices.Contains(first[0], m.ID) {
			rest = append(rest, m.ID)
		}
	}
	rec2 := newBatches()
	e.subscribeBatch(t, cfg, rec2.handler(nil))
	rec2.waitAll(t, "the messages never started", rest...)
	e.sentinel(t, tenantA, typeA, rec2.recorder)
	for _, id := range first[0] {
		if n := rec2.count(id); n != 0 {
			t.Errorf("%s, in the batch running during Stop, was delivered again %d times: Stop did not settle it", id, n)
		}
	}
	for _, id := range rest {
		if n := rec2.count(id); n != 1 {
			t.Errorf("%s delivered %d times to the next subscription, want 1", id, n)
		}
	}
}

// testBatchInvalid: Subscribe refuses a Batch above 1 (its handler takes one delivery), and
// SubscribeBatch a nil handler or a Batch out of range.
func testBatchInvalid(t *testing.T, s *suite) {
	e := s.newEnv(t)
	bs := e.batchBus(t)
	ok := func(context.Context, []bus.Delivery) []error { return nil }
	check := func(what string, sub bus.Subscription, err error) {
		t.Helper()
		if sub != nil {
			stop(t, sub)
		}
		if !errs.Is(err, errs.Invalid) {
			t.Errorf("%s = %v, want an errs.Invalid", what, err)
		}
	}
	sub, err := e.b.Subscribe(t.Context(), batchConsumer("valid", 1, 2), func(context.Context, bus.Delivery) error { return nil })
	check("Subscribe with Batch 2", sub, err)
	sub, err = bs.SubscribeBatch(t.Context(), batchConsumer("valid", 1, 2), nil)
	check("SubscribeBatch with a nil handler", sub, err)
	for _, n := range []int{-1, bus.MaxBatch + 1} {
		sub, err = bs.SubscribeBatch(t.Context(), batchConsumer("valid", 1, n), ok)
		check(fmt.Sprintf("SubscribeBatch with Batch %d", n), sub, err)
	}
}
