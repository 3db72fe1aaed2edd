package redisbus

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// settleFlushEvery is how long an acknowledgement may wait in a subscription's batcher
	// before it is sent; settleBatchMax queued acknowledgements are sent at once.
	settleFlushEvery = time.Millisecond
	settleBatchMax   = 256
	// settleQueueMax bounds the acknowledgements queued and not yet confirmed by Redis: an Ack
	// beyond it waits for a flush (bounded memory while Redis is slow).
	settleQueueMax = 16 * settleBatchMax
	// settleFlushTimeout bounds one flush.
	settleFlushTimeout = 5 * time.Second
)

// ackBatcher sends a subscription's acknowledgements (XACK of the entry, ZREM of its delay-set
// member) in pipelines: Ack queues and returns at once, so the handler's slot is freed without
// waiting for a round trip. A pipeline is flushed settleFlushEvery after its first
// acknowledgement was queued, or as soon as settleBatchMax are queued; close flushes what is
// left and waits for Redis's replies. An acknowledgement that fails is logged and its entry
// stays pending: it is claimed again after AckWait (consumers dedupe by event id).
type ackBatcher struct {
	s     *subscription
	room  chan struct{} // a token per queued acknowledgement not yet flushed (bounds the queue)
	kick  chan struct{} // the queue became non-empty
	full  chan struct{} // the queue holds settleBatchMax
	stop  chan struct{} // closed by close
	done  chan struct{} // closed when the flusher has returned
	once  sync.Once
	mu    sync.Mutex
	queue []*settler
	spare []*settler // the previous batch's slice, reused
}

func newAckBatcher(s *subscription) *ackBatcher {
	a := &ackBatcher{
		s:    s,
		room: make(chan struct{}, settleQueueMax),
		kick: make(chan struct{}, 1),
		full: make(chan struct{}, 1),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	go a.run()
	return a
}

// enqueue queues the acknowledgement of st. It waits for room (a flush) only when
// settleQueueMax acknowledgements are queued, and returns ctx's error if that wait ends first.
// After close it returns false: the caller acknowledges synchronously.
func (a *ackBatcher) enqueue(ctx context.Context, st *settler) (bool, error) {
	// Room first without looking at ctx: ctx.Done would start the timer of Dispatch's settle
	// context, which an Ack that only queues does not need (see bus.Dispatch).
	select {
	case a.room <- struct{}{}:
	default:
		select {
		case a.room <- struct{}{}:
		case <-a.stop:
			return false, nil
		case <-ctx.Done():
			return true, context.Cause(ctx)
		}
	}
	a.mu.Lock()
	select {
	case <-a.stop:
		// close has taken the last batch already.
		a.mu.Unlock()
		<-a.room
		return false, nil
	default:
	}
	a.queue = append(a.queue, st)
	n := len(a.queue)
	a.mu.Unlock()
	if n == 1 {
		signal(a.kick)
	}
	if n >= settleBatchMax {
		signal(a.full)
	}
	return true, nil
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// run is the flusher: it waits for a first acknowledgement, lets a batch gather for
// settleFlushEvery (or until it is full), and sends it.
func (a *ackBatcher) run() {
	defer close(a.done)
	t := time.NewTimer(time.Hour)
	t.Stop()
	for {
		select {
		case <-a.kick:
		case <-a.stop:
			a.flush()
			return
		}
		t.Reset(settleFlushEvery)
		select {
		case <-a.full:
		case <-t.C:
		case <-a.stop:
		}
		t.Stop()
		a.flush()
	}
}

// flush sends every queued acknowledgement in one pipeline and waits for the replies.
func (a *ackBatcher) flush() {
	a.mu.Lock()
	batch := a.queue
	a.queue = a.spare[:0]
	a.mu.Unlock()
	if len(batch) == 0 {
		a.spare = batch
		return
	}
	s := a.s
	ctx, cancel := context.WithTimeout(context.Background(), settleFlushTimeout)
	// One XACK per stream and one ZREM for the whole batch: a command per entry would make
	// acknowledging cost Redis more than reading.
	ids := map[string][]string{}
	members := make([]any, 0, len(batch))
	for _, st := range batch {
		ids[st.key] = append(ids[st.key], st.id)
		members = append(members, st.member)
	}
	cmds, err := s.b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for key, list := range ids {
			p.XAck(ctx, key, s.cfg.Name, list...)
		}
		p.ZRem(ctx, s.delay, members...)
		return nil
	})
	cancel()
	if err != nil {
		failed := 0
		for _, c := range cmds {
			if c.Err() != nil {
				failed++
			}
		}
		s.log.Warn("could not acknowledge deliveries; they are redelivered after ack wait",
			"deliveries", len(batch), "failed_commands", failed, "ack_wait", s.cfg.AckWait, "error", err.Error())
	}
	for range batch {
		<-a.room
	}
	clear(batch)
	a.spare = batch[:0]
}

// close flushes the queued acknowledgements and waits until Redis has replied to them. Later
// acknowledgements are sent synchronously by their callers.
func (a *ackBatcher) close() {
	a.once.Do(func() {
		a.mu.Lock()
		close(a.stop)
		a.mu.Unlock()
	})
	<-a.done
}
