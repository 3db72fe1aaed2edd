package bustest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/bus"
)

// seq returns 1…n.
func seq(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i + 1
	}
	return out
}

// checkAttempts checks that message id was handed over exactly n times, with Attempt 1…n.
func checkAttempts(t *testing.T, rec *recorder, id string, n int, what string) {
	t.Helper()
	if got := rec.attempts(id); !slices.Equal(got, seq(n)) {
		t.Errorf("%s: attempts %v, want %v", what, got, seq(n))
	}
}

// testRetryThenSuccess: a handler failing 3 times and then succeeding is attempted exactly 4
// times, and nothing is dead-lettered.
func testRetryThenSuccess(t *testing.T, s *suite) {
	e := s.newEnv(t)
	m := e.msg(tenantA, typeA, "flaky")
	rec := newRecorder()
	e.subscribe(t, consumer("flaky"), rec.handler(func(_ context.Context, d bus.Delivery, call int) error {
		if d.ID == m.ID && call <= 3 {
			return fmt.Errorf("transient failure %d", call)
		}
		return nil
	}))
	e.publish(t, m)
	rec.waitCalls(t, m.ID, 4)
	e.sentinel(t, tenantA, typeA, rec)
	e.settled(t, "flaky")
	checkAttempts(t, rec, m.ID, 4, "a handler failing 3 times then succeeding (MaxDeliveries 5)")
	if n, err := e.b.CountDeadLetters(t.Context(), ""); err != nil || n != 0 {
		t.Errorf("CountDeadLetters = %d, %v; want 0 after a success", n, err)
	}
}

// testRetriesExhausted: a handler that always fails is attempted exactly MaxDeliveries times
// and the message lands once in the DLQ, with the failure described.
func testRetriesExhausted(t *testing.T, s *suite) {
	e := s.newEnv(t)
	m := e.msg(tenantB, typeB, "doomed")
	const reason = "always failing: reason-7f3a"
	rec := newRecorder()
	cfg := consumer("doomed")
	e.subscribe(t, cfg, rec.handler(func(_ context.Context, d bus.Delivery, _ int) error {
		if d.ID == m.ID {
			return errors.New(reason)
		}
		return nil
	}))
	e.publish(t, m)
	e.waitDLQCount(t, tenantB, 1)
	e.sentinel(t, tenantB, typeB, rec)
	e.settled(t, cfg.Name)
	checkAttempts(t, rec, m.ID, cfg.MaxDeliveries, "a handler that always fails")

	dls := e.listAll(t, bus.DLQFilter{}, 10)
	if len(dls) != 1 {
		t.Fatalf("the DLQ holds %d entries, want exactly 1: %+v", len(dls), dls)
	}
	last := rec.of(m.ID)[len(rec.of(m.ID))-1]
	checkDeadLetter(t, e, dls[0], m, cfg.Name, cfg.MaxDeliveries, reason, last)
	if n, err := e.b.CountDeadLetters(t.Context(), tenantB); err != nil || n != 1 {
		t.Errorf("CountDeadLetters(%s) = %d, %v; want 1", tenantB, n, err)
	}
	if n, err := e.b.CountDeadLetters(t.Context(), tenantA); err != nil || n != 0 {
		t.Errorf("CountDeadLetters(%s) = %d, %v; want 0", tenantA, n, err)
	}
}

// checkDeadLetter checks what the DLQ says about m after consumer gave up on it.
func checkDeadLetter(t *testing.T, e *env, dl bus.DeadLetter, m bus.Message, consumer string, attempts int, reason string, last bus.Delivery) {
	t.Helper()
	if want := bus.DeadLetterID(consumer, m.ID); dl.ID != want {
		t.Errorf("dead letter ID = %q, want DeadLetterID(%s, %s) = %q", dl.ID, consumer, m.ID, want)
	}
	if diff := cmp.Diff(m, dl.Message, msgOpts...); diff != "" {
		t.Errorf("dead letter message differs (-published +dead letter):\n%s", diff)
	}
	if dl.Message.Tenant != m.Tenant {
		t.Errorf("dead letter Tenant = %q, want %q", dl.Message.Tenant, m.Tenant)
	}
	if dl.Consumer != consumer {
		t.Errorf("dead letter Consumer = %q, want %q", dl.Consumer, consumer)
	}
	if dl.Attempts != attempts {
		t.Errorf("dead letter Attempts = %d, want %d", dl.Attempts, attempts)
	}
	if !strings.Contains(dl.Reason, reason) {
		t.Errorf("dead letter Reason = %q, want it to contain %q", dl.Reason, reason)
	}
	e.checkStoredAt(t, "dead letter FailedAt", dl.FailedAt)
	e.checkStoredAt(t, "dead letter StoredAt", dl.StoredAt)
	if !dl.StoredAt.IsZero() && dl.StoredAt.Sub(last.StoredAt).Abs() >= time.Millisecond {
		t.Errorf("dead letter StoredAt = %s, want the delivery's %s", dl.StoredAt, last.StoredAt)
	}
	if dl.FailedAt.Before(dl.StoredAt.Truncate(time.Millisecond)) {
		t.Errorf("dead letter FailedAt %s is before StoredAt %s", dl.FailedAt, dl.StoredAt)
	}
	if dl.Source != last.Position {
		t.Errorf("dead letter Source = %q, want the failed delivery's Position %q", dl.Source, last.Position)
	}
	if dl.Position == "" {
		t.Errorf("dead letter Position is empty")
	}
}

// testTerminal: a Terminal error is attempted once and dead-lettered at once.
func testTerminal(t *testing.T, s *suite) {
	e := s.newEnv(t)
	m := e.msg(tenantA, typeA, "poison")
	const reason = "cannot parse: reason-91c2"
	rec := newRecorder()
	cfg := consumer("strict")
	e.subscribe(t, cfg, rec.handler(func(_ context.Context, d bus.Delivery, _ int) error {
		if d.ID == m.ID {
			return bus.Terminal(errors.New(reason))
		}
		return nil
	}))
	e.publish(t, m)
	e.waitDLQCount(t, tenantA, 1)
	e.sentinel(t, tenantA, typeA, rec)
	e.settled(t, cfg.Name)
	checkAttempts(t, rec, m.ID, 1, "a handler returning a terminal error")
	dls := e.listAll(t, bus.DLQFilter{Tenant: tenantA}, 10)
	if len(dls) != 1 {
		t.Fatalf("the DLQ holds %d entries, want exactly 1: %+v", len(dls), dls)
	}
	checkDeadLetter(t, e, dls[0], m, cfg.Name, 1, reason, rec.of(m.ID)[0])
}

// testRetryAfter: RetryAfter's delay replaces the backoff's; the second attempt does not come
// before it (a lower bound: a correct adapter never fails it, however loaded the machine).
func testRetryAfter(t *testing.T, s *suite) {
	e := s.newEnv(t)
	const delay = 700 * time.Millisecond // the backoff alone would retry after 20 ms
	m := e.msg(tenantA, typeA, "later")
	var mu sync.Mutex
	var failedAt, retriedAt time.Time
	rec := newRecorder()
	e.subscribe(t, consumer("patient"), rec.handler(func(_ context.Context, d bus.Delivery, call int) error {
		if d.ID != m.ID {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		if call == 1 {
			failedAt = time.Now()
			return bus.RetryAfter(errors.New("downstream busy"), delay)
		}
		if call == 2 {
			retriedAt = time.Now()
		}
		return nil
	}))
	e.publish(t, m)
	rec.waitCalls(t, m.ID, 2)
	e.sentinel(t, tenantA, typeA, rec)
	e.settled(t, "patient")
	checkAttempts(t, rec, m.ID, 2, "a handler asking for a retry once")
	mu.Lock()
	defer mu.Unlock()
	if waited := retriedAt.Sub(failedAt); waited < delay {
		t.Errorf("the retry came %s after the failure, before the %s RetryAfter asked for", waited, delay)
	}
}

// testPanic: a panicking handler is a failed attempt: retried, and dead-lettered when it keeps
// panicking, the reason naming the panic.
func testPanic(t *testing.T, s *suite) {
	e := s.newEnv(t)
	once := e.msg(tenantA, typeA, "panics-once")
	always := e.msg(tenantA, typeA, "panics-always")
	rec := newRecorder()
	cfg := consumer("fragile")
	cfg.MaxDeliveries = 3
	e.subscribe(t, cfg, rec.handler(func(_ context.Context, d bus.Delivery, call int) error {
		switch {
		case d.ID == once.ID && call == 1:
			panic("kaboom-once")
		case d.ID == always.ID:
			panic("kaboom-always")
		}
		return nil
	}))
	e.publish(t, once, always)
	rec.waitCalls(t, once.ID, 2)
	e.waitDLQCount(t, tenantA, 1)
	e.sentinel(t, tenantA, typeA, rec)
	e.settled(t, cfg.Name)
	checkAttempts(t, rec, once.ID, 2, "a handler panicking once")
	checkAttempts(t, rec, always.ID, 3, "a handler always panicking (MaxDeliveries 3)")
	dls := e.listAll(t, bus.DLQFilter{}, 10)
	if len(dls) != 1 {
		t.Fatalf("the DLQ holds %d entries, want exactly 1: %+v", len(dls), dls)
	}
	last := rec.of(always.ID)[2]
	checkDeadLetter(t, e, dls[0], always, cfg.Name, 3, "kaboom-always", last)
}

// testOnDeadLetter: the OnDeadLetter hook is called once per dead letter, with the dead letter.
func testOnDeadLetter(t *testing.T, s *suite) {
	e := s.newEnv(t)
	terminal := e.msgs(tenantA, typeA, "term", 3)
	exhausted := e.msg(tenantB, typeA, "exhausted")
	fail := map[string]bool{exhausted.ID: true}
	for _, m := range terminal {
		fail[m.ID] = true
	}
	var mu sync.Mutex
	var hooked []bus.DeadLetter
	cfg := consumer("hooked")
	cfg.MaxDeliveries = 2
	cfg.OnDeadLetter = func(_ context.Context, dl bus.DeadLetter) {
		mu.Lock()
		defer mu.Unlock()
		hooked = append(hooked, dl)
	}
	rec := newRecorder()
	e.subscribe(t, cfg, rec.handler(func(_ context.Context, d bus.Delivery, _ int) error {
		switch {
		case d.ID == exhausted.ID:
			return errors.New("not today")
		case fail[d.ID]:
			return bus.Terminal(errors.New("never"))
		}
		return nil
	}))
	e.publish(t, append(terminal, exhausted)...)
	e.waitDLQCount(t, "", 4)
	e.sentinel(t, tenantA, typeA, rec)
	e.settled(t, cfg.Name)

	mu.Lock()
	defer mu.Unlock()
	got := map[string]int{}
	for _, dl := range hooked {
		got[dl.ID]++
		if dl.Consumer != cfg.Name {
			t.Errorf("hook: dead letter Consumer = %q, want %q", dl.Consumer, cfg.Name)
		}
	}
	want := map[string]int{}
	for id := range fail {
		want[bus.DeadLetterID(cfg.Name, id)] = 1
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("OnDeadLetter calls per dead letter ID (-want +got):\n%s", diff)
	}
	for _, dl := range hooked {
		if dl.Message.ID == exhausted.ID && dl.Attempts != 2 {
			t.Errorf("hook: Attempts = %d for the exhausted message, want 2", dl.Attempts)
		}
	}
}

// testStop: Stop waits for the running handler and settles its message (acknowledged: not
// redelivered to the next subscription of the same name); messages never started go to the
// next subscription.
func testStop(t *testing.T, s *suite) {
	e := s.newEnv(t)
	msgs := e.msgs(tenantA, typeA, "stop", 3)
	started, release := make(chan struct{}), make(chan struct{})
	var finished bool // written by the handler before it returns; read after Stop returned
	var mu sync.Mutex
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	rec1 := newRecorder()
	cfg := consumer("stopper")
	sub := e.subscribe(t, cfg, rec1.handler(func(_ context.Context, d bus.Delivery, _ int) error {
		if d.ID == msgs[0].ID {
			close(started)
			<-release
			mu.Lock()
			finished = true
			mu.Unlock()
		}
		return nil
	}))
	e.publish(t, msgs...)
	select {
	case <-started:
	case <-time.After(waitTimeout):
		t.Fatalf("the first message was not delivered within %s", waitTimeout)
	}

	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		defer cancel()
		stopped <- sub.Stop(ctx)
	}()
	select {
	case err := <-stopped:
		t.Fatalf("Stop returned (%v) while a handler was still running", err)
	case <-time.After(300 * time.Millisecond): // a lower bound: Stop may not return before the handler does
	}
	close(release)
	if err := <-stopped; err != nil {
		t.Fatalf("Stop: %v", err)
	}
	mu.Lock()
	done := finished
	mu.Unlock()
	if !done {
		t.Fatalf("Stop returned before the running handler finished")
	}
	if got := rec1.ids(); !slices.Equal(got, []string{msgs[0].ID}) {
		t.Errorf("the stopped subscription handled %v, want only the first message (Concurrency 1)", got)
	}

	rec2 := newRecorder()
	e.subscribe(t, cfg, rec2.handler(nil))
	rec2.waitAll(t, "the messages never started", msgs[1].ID, msgs[2].ID)
	e.sentinel(t, tenantA, typeA, rec2)
	if n := rec2.count(msgs[0].ID); n != 0 {
		t.Errorf("the message being handled during Stop was delivered again %d times: Stop did not settle it", n)
	}
	for _, m := range msgs[1:] {
		if n := rec2.count(m.ID); n != 1 {
			t.Errorf("%s delivered %d times to the next subscription, want 1", m.ID, n)
		}
	}
}

// testCrashRecovery: a handler that does not settle its message within AckWait (hung, or its
// process died) loses it: the broker delivers it again, as the next attempt, to another member
// of the group.
func testCrashRecovery(t *testing.T, s *suite) {
	e := s.newEnv(t)
	m := e.msg(tenantA, typeA, "orphan")
	cfg := consumer("survivor")
	cfg.AckWait = shortAckWait
	got, release := make(chan struct{}), make(chan struct{})
	defer close(release)
	rec := newRecorder()
	var once sync.Once
	e.subscribe(t, cfg, rec.handler(func(ctx context.Context, d bus.Delivery, _ int) error {
		if d.ID != m.ID {
			return nil
		}
		once.Do(func() { close(got) })
		<-ctx.Done() // hung past AckWait…
		<-release    // …until the other member has the message
		return nil
	}))
	e.publish(t, m)
	select {
	case <-got:
	case <-time.After(waitTimeout):
		t.Fatalf("the message was not delivered within %s", waitTimeout)
	}
	rec2 := newRecorder()
	e.subscribe(t, cfg, rec2.handler(nil))
	rec2.waitAll(t, "the redelivery to the other member", m.ID)
	if got := rec2.attempts(m.ID); len(got) == 0 || got[0] != 2 {
		t.Errorf("the redelivery after AckWait has attempts %v, want [2]", got)
	}
	if got := rec.attempts(m.ID); !slices.Equal(got, []int{1}) {
		t.Errorf("the hung member was handed the message with attempts %v, want [1]", got)
	}
}
