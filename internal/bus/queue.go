package bus

import (
	"sync"
	"sync/atomic"
	"time"
)

// Queue is a subscription's bounded in-process queue: the adapter's fetching goroutines push
// the messages they fetched, and Concurrency long-lived worker goroutines take them in order
// and run the handler. A worker takes up to Batch messages at once — one, waiting for it, then
// those already queued, without waiting — and handles them in one call: a batch consumer (see
// BatchHandler) runs one goroutine per batch instead of one per message. Fetching ahead of the handlers (ConsumerConfig.Prefetch) saves a round
// trip to the broker per handful of messages; the adapter bounds it by reserving a place for
// each message before it fetches, so a slow handler slows delivery instead of growing memory.
//
// A prefetched message waits in the queue while its AckWait runs at the broker. Every HoldEvery
// the queue passes the messages that have waited longer than that to Hold, which tells the
// broker they are in progress (NATS +WPI, Redis XCLAIM … JUSTID), so waiting does not make them
// redelivered — as long as the handlers make progress. When no handler finished during a whole
// interval while handlers were running (hung past AckWait), the queue stops holding: its
// messages then expire at the broker and go to another member of the group instead of waiting
// behind a hung handler. Tick tells the adapter, once per interval, whether the handlers made
// progress, so that it fetches ahead only while they do. When the subscription stops, the
// messages no worker has started are passed to Release, which gives them back to the broker
// for redelivery, and are not handled here.
//
// Concurrency: Push, Stop and Wait may be called from any goroutine; Push must not be called
// after Stop.
type Queue[M any] struct {
	ch        chan M
	batch     int
	handle    func([]M)
	hold      func([]M)
	release   func([]M)
	tick      func(progress bool)
	holdEvery time.Duration

	running atomic.Int64 // handlers running
	done    atomic.Int64 // handlers finished, ever

	mu     sync.Mutex
	ring   []stamped[M] // the last cap(ch) pushes, in order: the queued ones are the newest len(ch)
	pushed int          // pushes so far; the next goes to ring[pushed%len(ring)]
	ticks  int64        // HoldEvery intervals passed so far

	stop    chan struct{}
	stopped sync.Once
	workers sync.WaitGroup
	holder  sync.WaitGroup
}

// stamped is a pushed message and the number of hold intervals that had passed when it was
// pushed: counting intervals instead of reading the clock keeps time.Now off every push, and
// tells holdLoop the same thing (see waiting).
type stamped[M any] struct {
	m    M
	tick int64
}

// QueueOptions configure NewQueue. Handle is required; the other funcs may be nil.
type QueueOptions[M any] struct {
	Workers   int           // goroutines running Handle
	Batch     int           // most messages per Handle call; default 1
	Capacity  int           // most messages queued (the adapter reserves a place before each Push)
	HoldEvery time.Duration // interval of Hold and Tick; 0 turns both off
	// Handle runs the messages a worker took, in push order. The slice is reused by the
	// worker's next call: Handle must not keep it.
	Handle  func([]M)
	Hold    func([]M)           // tell the broker these queued messages are in progress
	Release func([]M)           // give these queued messages back (the subscription stops)
	Tick    func(progress bool) // once per HoldEvery: did a handler finish, or none run?
}

// NewQueue starts o.Workers goroutines running o.Handle on pushed messages, in push order.
func NewQueue[M any](o QueueOptions[M]) *Queue[M] {
	capacity := max(o.Capacity, 1)
	q := &Queue[M]{
		ch: make(chan M, capacity), batch: max(o.Batch, 1), handle: o.Handle, hold: o.Hold, release: o.Release, tick: o.Tick,
		holdEvery: o.HoldEvery, ring: make([]stamped[M], capacity), stop: make(chan struct{}),
	}
	for range max(o.Workers, 1) {
		q.workers.Go(q.work)
	}
	if o.HoldEvery > 0 && (o.Hold != nil || o.Tick != nil) {
		q.holder.Go(q.holdLoop)
	}
	return q
}

// Push queues m for a worker. The caller holds a place for it (at most capacity are queued).
func (q *Queue[M]) Push(m M) {
	q.mu.Lock()
	q.ring[q.pushed%len(q.ring)] = stamped[M]{m: m, tick: q.ticks}
	q.pushed++
	q.mu.Unlock()
	q.ch <- m
}

// Stop ends the workers once they finish the messages they run; the queued ones go to release.
// Wait waits for that.
func (q *Queue[M]) Stop() {
	q.stopped.Do(func() { close(q.stop) })
}

// Wait waits until Stop was called and every worker returned.
func (q *Queue[M]) Wait() {
	q.workers.Wait()
	q.holder.Wait()
}

func (q *Queue[M]) work() {
	buf := make([]M, 0, q.batch)
	for {
		// Stopping wins over a queued message: once Stop was called no new handler starts.
		select {
		case <-q.stop:
			q.drain()
			return
		default:
		}
		select {
		case <-q.stop:
			q.drain()
			return
		case m := <-q.ch:
			buf = q.take(append(buf[:0], m))
			q.running.Add(1)
			q.handle(buf)
			q.running.Add(-1)
			q.done.Add(int64(len(buf)))
			clear(buf) // let the handled messages go
		}
	}
}

// take appends to buf the messages already queued, without waiting, until it holds q.batch.
func (q *Queue[M]) take(buf []M) []M {
	for len(buf) < q.batch {
		select {
		case m := <-q.ch:
			buf = append(buf, m)
		default:
			return buf
		}
	}
	return buf
}

// drain gives back what is still queued. Several stopping workers share the work.
func (q *Queue[M]) drain() {
	var left []M
	for {
		select {
		case m := <-q.ch:
			left = append(left, m)
		default:
			if len(left) > 0 && q.release != nil {
				q.release(left)
			}
			return
		}
	}
}

func (q *Queue[M]) holdLoop() {
	t := time.NewTicker(q.holdEvery)
	defer t.Stop()
	lastDone := q.done.Load()
	for {
		select {
		case <-q.stop:
			return
		case <-t.C:
			q.mu.Lock()
			q.ticks++
			tick := q.ticks
			q.mu.Unlock()
			done := q.done.Load()
			progress := done != lastDone || q.running.Load() == 0
			lastDone = done
			if q.tick != nil {
				q.tick(progress)
			}
			if !progress || q.hold == nil {
				continue
			}
			if waiting := q.waiting(tick - 2); len(waiting) > 0 {
				q.hold(waiting)
			}
		}
	}
}

// waiting returns the queued messages pushed when at most upTo hold intervals had passed. At the
// k-th tick, upTo k−2 means pushed before the previous tick: they have waited at least
// HoldEvery, and every message is held by the time it has waited twice that. It may include a message a worker
// took meanwhile, or miss one pushed during the call: holding a message that is running or
// settled is harmless, and a missed one is held at the next tick, well within AckWait.
func (q *Queue[M]) waiting(upTo int64) []M {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := min(len(q.ch), q.pushed, len(q.ring))
	var out []M
	for i := q.pushed - n; i < q.pushed; i++ {
		s := q.ring[i%len(q.ring)]
		if s.tick > upTo {
			break // later pushes are newer still
		}
		out = append(out, s.m)
	}
	return out
}
