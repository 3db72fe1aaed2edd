package bus

import (
	"context"
	"errors"
	"testing"
	"time"
)

type ctxKey struct{}

// waitDone waits (at most 10 s) for ctx to end.
func waitDone(t *testing.T, ctx context.Context) {
	t.Helper()
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the context did not end")
	}
}

// TestWithDeadlineLazy: over a parent that never ends, withDeadline starts no timer until
// someone waits, and behaves like context.WithDeadline all the same: the deadline is reported,
// values pass through, Err and Cause read DeadlineExceeded once the deadline has passed
// (whether or not anyone waited) and Canceled once stopped before it, and Done and children end
// with it.
func TestWithDeadlineLazy(t *testing.T) {
	parent := context.WithValue(context.WithoutCancel(t.Context()), ctxKey{}, "v")

	t.Run("before the deadline", func(t *testing.T) {
		d := time.Now().Add(time.Hour)
		ctx, stop := withDeadline(parent, d)
		defer stop(time.Now())
		lazy, ok := ctx.(*lazyDeadline)
		if !ok {
			t.Fatalf("withDeadline over a parent that never ends = %T, want the lazy context", ctx)
		}
		if got, ok := ctx.Deadline(); !ok || !got.Equal(d) {
			t.Errorf("Deadline = %v, %v; want %v", got, ok, d)
		}
		if ctx.Value(ctxKey{}) != "v" || ctx.Err() != nil || context.Cause(ctx) != nil {
			t.Errorf("Value %v, Err %v, Cause %v; want v, nil, nil", ctx.Value(ctxKey{}), ctx.Err(), context.Cause(ctx))
		}
		if lazy.real != nil {
			t.Errorf("a timer was started though nobody waited")
		}
	})

	t.Run("deadline passed, nobody waited", func(t *testing.T) {
		ctx, stop := withDeadline(parent, time.Now().Add(time.Millisecond))
		// Only the clock is awaited (nothing calls Done): poll Err, with a bound.
		for limit := time.Now().Add(10 * time.Second); ctx.Err() == nil; {
			if time.Now().After(limit) {
				t.Fatal("Err stayed nil past the deadline")
			}
			time.Sleep(time.Millisecond)
		}
		if ctx.(*lazyDeadline).real != nil {
			t.Errorf("reading Err started a timer")
		}
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) || !errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
			t.Errorf("Err %v, Cause %v; want deadline exceeded", ctx.Err(), context.Cause(ctx))
		}
		stop(time.Now())
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			t.Errorf("after stop Err = %v, want still deadline exceeded", ctx.Err())
		}
		waitDone(t, ctx)
	})

	t.Run("waiting starts the timer", func(t *testing.T) {
		ctx, stop := withDeadline(parent, time.Now().Add(20*time.Millisecond))
		defer stop(time.Now())
		child, cancel := context.WithCancel(ctx)
		defer cancel()
		waitDone(t, child)
		waitDone(t, ctx)
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) || !errors.Is(context.Cause(child), context.DeadlineExceeded) {
			t.Errorf("Err %v, child's Cause %v; want deadline exceeded", ctx.Err(), context.Cause(child))
		}
		if ctx.Value(ctxKey{}) != "v" {
			t.Errorf("Value after the timer started = %v, want v", ctx.Value(ctxKey{}))
		}
	})

	t.Run("stopped before the deadline", func(t *testing.T) {
		ctx, stop := withDeadline(parent, time.Now().Add(time.Hour))
		stop(time.Now())
		if !errors.Is(ctx.Err(), context.Canceled) || !errors.Is(context.Cause(ctx), context.Canceled) {
			t.Errorf("Err %v, Cause %v; want canceled", ctx.Err(), context.Cause(ctx))
		}
		waitDone(t, ctx)
		if !errors.Is(ctx.Err(), context.Canceled) {
			t.Errorf("Err after Done = %v, want canceled", ctx.Err())
		}
	})

	t.Run("stopped while waited for", func(t *testing.T) {
		ctx, stop := withDeadline(parent, time.Now().Add(time.Hour))
		done := ctx.Done()
		stop(time.Now())
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("Done did not close on stop")
		}
		if !errors.Is(ctx.Err(), context.Canceled) {
			t.Errorf("Err = %v, want canceled", ctx.Err())
		}
	})
}

// TestWithDeadlineParentEnds: over a parent that can end, withDeadline is context.WithDeadline:
// the parent's cancellation reaches it.
func TestWithDeadlineParentEnds(t *testing.T) {
	parent, cancel := context.WithCancelCause(t.Context())
	ctx, stop := withDeadline(parent, time.Now().Add(time.Hour))
	defer stop(time.Now())
	if _, lazy := ctx.(*lazyDeadline); lazy {
		t.Fatal("withDeadline over a parent that can end returned the lazy context")
	}
	boom := errors.New("boom")
	cancel(boom)
	waitDone(t, ctx)
	if !errors.Is(context.Cause(ctx), boom) {
		t.Errorf("Cause = %v, want the parent's", context.Cause(ctx))
	}
}
