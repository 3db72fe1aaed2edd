package bus

import (
	"context"
	"sync"
	"time"
)

// withDeadline is context.WithDeadline for Dispatch, which gives every delivery two contexts with
// a deadline (the handler's AckWait, the settlement's timeout): a timer per context was a
// noticeable part of a fast consumer's cost (about 15 % of the Redis adapter's consumer CPU with
// a handler doing nothing). When parent can never end (Done() == nil, as for the
// context.WithoutCancel contexts the adapters hand to Dispatch), the returned context starts its
// timer only when someone waits for it (Done, or a child context); a handler that never blocks on
// ctx, or an Ack that only queues the acknowledgement, costs no timer. Until then Err reads the
// clock, so the context reports the same Err, Deadline and Cause as context.WithDeadline would.
// With a parent that can end it is context.WithDeadline.
//
// stop ends the context, like a CancelFunc; the caller passes the current time, which it has
// read anyway (Dispatch reads the clock once per step, not once per context).
func withDeadline(parent context.Context, d time.Time) (ctx context.Context, stop func(now time.Time)) {
	if parent.Done() != nil {
		ctx, cancel := context.WithDeadline(parent, d)
		return ctx, func(time.Time) { cancel() }
	}
	c := &lazyDeadline{parent: parent, deadline: d}
	return c, c.stop
}

// lazyDeadline is withDeadline's context over a parent that never ends.
//
// Cause: context.Cause finds the nearest context.WithCancel ancestor through Value. A parent
// whose Done is nil has none that can end (context.WithoutCancel hides its ancestors'), so
// before the timer starts Value passes to parent and Cause falls back to Err; afterwards both go
// to the real context.
type lazyDeadline struct {
	parent   context.Context
	deadline time.Time

	mu      sync.Mutex
	real    context.Context // context.WithDeadline(parent, deadline), once someone waits
	cancel  context.CancelFunc
	stopped bool // stop was called before the real context existed
}

func (c *lazyDeadline) Deadline() (time.Time, bool) { return c.deadline, true }

func (c *lazyDeadline) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.real == nil {
		if c.stopped {
			// Cancelled before its deadline: Canceled, whatever the clock says now.
			c.real, c.cancel = context.WithCancel(c.parent)
			c.cancel()
		} else {
			c.real, c.cancel = context.WithDeadline(c.parent, c.deadline)
		}
	}
	return c.real.Done()
}

func (c *lazyDeadline) Err() error {
	c.mu.Lock()
	real, stopped := c.real, c.stopped
	c.mu.Unlock()
	switch {
	case real != nil:
		return real.Err()
	case stopped:
		return context.Canceled
	case !time.Now().Before(c.deadline):
		return context.DeadlineExceeded
	}
	return nil
}

func (c *lazyDeadline) Value(key any) any {
	c.mu.Lock()
	real := c.real
	c.mu.Unlock()
	if real != nil {
		return real.Value(key)
	}
	return c.parent.Value(key)
}

// stop ends the context at now (Canceled, unless the deadline came first) and releases its
// timer.
func (c *lazyDeadline) stop(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.real != nil {
		c.cancel()
		return
	}
	if !c.stopped && now.Before(c.deadline) {
		c.stopped = true
	}
}

func (c *lazyDeadline) String() string { return "bus.withDeadline" }
