package natsbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/errs"
)

const (
	// fetchBackoffMax caps the wait between failed fetches (consumer unreachable).
	fetchBackoffMax = 2 * time.Second
	// minMaxAckPending is the consumers' MaxAckPending unless Handlers() is larger: messages
	// waiting for a delayed retry count towards it too.
	minMaxAckPending = 1000
	// fetchersPerSource is how many pull requests a subscription with a single source (NATS ≥
	// 2.10) keeps going: while one waits for its messages, another asks for the slots freed
	// meanwhile, so that fetching is not one round trip per handful of messages. They share the
	// handler slots, so no more messages are fetched than there are free slots.
	fetchersPerSource = 2
)

// Subscribe implements bus.Bus with a durable pull consumer on the event stream; see the
// package documentation. Messages are fetched only for free handler slots (cfg.Handlers()),
// so a slow handler slows delivery instead of filling memory.
func (b *Bus) Subscribe(ctx context.Context, cfg bus.ConsumerConfig, h bus.Handler) (bus.Subscription, error) {
	if h == nil {
		return nil, errs.Field("handler", "must not be nil")
	}
	if cfg.Batch > 1 {
		return nil, errs.Field("batch", "needs a batch handler (SubscribeBatch)")
	}
	return b.subscribe(ctx, cfg, h, nil)
}

// SubscribeBatch implements bus.BatchSubscriber: Subscribe, with a handler of up to cfg.Batch
// deliveries per call.
func (b *Bus) SubscribeBatch(ctx context.Context, cfg bus.ConsumerConfig, h bus.BatchHandler) (bus.Subscription, error) {
	if h == nil {
		return nil, errs.Field("handler", "must not be nil")
	}
	return b.subscribe(ctx, cfg, nil, h)
}

// subscribe runs h, or bh when h is nil, on cfg's consumer.
func (b *Bus) subscribe(ctx context.Context, cfg bus.ConsumerConfig, h bus.Handler, bh bus.BatchHandler) (bus.Subscription, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	if err := b.checkOpen(); err != nil {
		return nil, err
	}
	var sources []*source
	var err error
	if b.multiFilter {
		var src *source
		src, err = b.ensureConsumer(ctx, cfg)
		sources = []*source{src}
	} else {
		sources, err = b.ensureSplitConsumers(ctx, cfg)
	}
	if err != nil {
		return nil, unavailable(err, "subscribe %s", cfg.Name)
	}
	runCtx, cancel := context.WithCancel(ctx)
	s := &subscription{
		b:       b,
		cfg:     cfg,
		h:       h,
		bh:      bh,
		sources: sources,
		ctx:     ctx,
		runCtx:  runCtx,
		cancel:  cancel,
		slots:   bus.NewPlaces(cfg.Handlers(), max(cfg.Prefetch, 0)),
		done:    make(chan struct{}),
	}
	s.queue = bus.NewQueue(bus.QueueOptions[*nats.Msg]{
		Workers: cfg.Concurrency, Batch: cfg.Batch, Capacity: cfg.QueueCapacity(), HoldEvery: cfg.HoldEvery(),
		Handle: s.work, Hold: s.hold, Release: s.release, Tick: s.slots.Progress,
	})
	b.mu.Lock()
	if b.closing {
		b.mu.Unlock()
		cancel()
		return nil, errs.Wrap(errs.Unavailable, errors.New("the nats bus is closed"), "event bus unavailable")
	}
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	go s.run()
	return s, nil
}

// checkOpen fails once Close has begun.
func (b *Bus) checkOpen() error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closing {
		return errs.Wrap(errs.Unavailable, errors.New("the nats bus is closed"), "event bus unavailable")
	}
	return nil
}

// subscription is a running consumer: a goroutine fetching from each source (a single one on
// NATS ≥ 2.10) and one goroutine per running handler.
type subscription struct {
	b       *Bus
	cfg     bus.ConsumerConfig // with defaults
	h       bus.Handler        // nil for a batch subscription
	bh      bus.BatchHandler   // set for a batch subscription
	sources []*source          // each owned by its fetching goroutine

	ctx    context.Context    // Subscribe's: the handlers' context
	runCtx context.Context    // ends fetching: Subscribe's ctx ended or Stop/Close
	cancel context.CancelFunc // ends runCtx

	slots *bus.Places // places: one per message fetched and not yet settled (queued or in a handler)
	queue *bus.Queue[*nats.Msg]
	acks  ackBarrier
	done  chan struct{} // closed once fetching stopped and every handler returned
}

// Stop implements bus.Subscription: no more fetching (the pull request in flight is withdrawn),
// the queued messages no handler started are given back (NAK, redelivered at once to another
// member of the group); it waits (up to ctx) for the running handlers,
// which settle their messages, and for the server to confirm it has processed the
// subscription's acknowledgements (which the handlers only sent; see ackBarrier). Later calls
// wait the same way, and return at once when the subscription has stopped.
func (s *subscription) Stop(ctx context.Context) error {
	s.cancel()
	return s.wait(ctx)
}

func (s *subscription) wait(ctx context.Context) error {
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop consumer %s: handlers still running: %w", s.cfg.Name, context.Cause(ctx))
	}
}

// errStopped ends a fetching loop.
var errStopped = errors.New("subscription stopped")

// run fetches until runCtx ends, then waits for the handlers. With one source, fetching waits
// for free places and asks for that many messages. With several (NATS < 2.10) each source's
// goroutine waits until a place is free, fetches one message without holding the place (so
// that a source with nothing to deliver does not keep the others waiting) and then takes a
// place for it. Fetched messages go to the queue, whose workers run the handlers.
func (s *subscription) run() {
	defer func() {
		s.queue.Stop()
		s.queue.Wait()
		s.acks.confirm(s.b, s.b.logger.With("consumer", s.cfg.Name))
		s.b.mu.Lock()
		delete(s.b.subs, s)
		s.b.mu.Unlock()
		close(s.done)
	}()
	var wg sync.WaitGroup
	if len(s.sources) == 1 {
		fetchers := fetchersPerSource
		if s.cfg.Prefetch > 0 {
			// One pull request at a time keeps the queue in stream order; the prefetched
			// messages keep the handlers busy during its round trip.
			fetchers = 1
		}
		for range fetchers {
			wg.Go(func() { s.loop(s.sources[0], s.fetchForSlots) })
		}
	} else {
		// One goroutine per source: two would each fetch a message before taking a slot,
		// and could hand them to the handlers out of order.
		for _, src := range s.sources {
			wg.Go(func() { s.loop(src, s.fetchThenSlot) })
		}
	}
	wg.Wait()
}

// loop runs step until the subscription stops, backing off while it fails.
func (s *subscription) loop(src *source, step func(*source) error) {
	log := s.b.logger.With("consumer", s.cfg.Name)
	var backoff time.Duration
	failing := false
	for {
		err := step(src)
		if errors.Is(err, errStopped) || s.runCtx.Err() != nil {
			return
		}
		if err == nil {
			if failing {
				log.Info("consumer fetching again")
				failing = false
			}
			backoff = 0
			continue
		}
		if !failing {
			log.Warn("consumer cannot fetch; retrying", "error", err.Error())
			failing = true
		}
		if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, nats.ErrNoResponders) {
			// Deleted behind our back (or its stream was recreated): create it again.
			s.recreate(log, src)
		}
		backoff = min(max(2*backoff, 100*time.Millisecond), fetchBackoffMax)
		t := time.NewTimer(backoff)
		select {
		case <-s.runCtx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// fetchForSlots waits for a free handler slot, takes every free one, and fetches that many
// messages, starting a handler for each as it arrives.
func (s *subscription) fetchForSlots(src *source) error {
	n, ok := s.slots.Wait(s.runCtx.Done(), true)
	if !ok {
		return errStopped
	}
	got, err := s.pull(src, n, false, s.start)
	s.slots.Release(n - got)
	return err
}

// fetchThenSlot waits until a handler slot is free, fetches one message and takes a slot for
// it. When another source took the slot meanwhile, it holds the message until one is free,
// telling the server that the message is in progress so that its AckWait does not run out; if
// the subscription stops meanwhile, the message is released for redelivery. Once a message
// came, it takes every free slot and asks, without waiting, for as many messages as are
// already there, so that a backlog is not fetched one message per round trip.
func (s *subscription) fetchThenSlot(src *source) error {
	if _, ok := s.slots.Wait(s.runCtx.Done(), false); !ok {
		return errStopped
	}
	got, err := s.pull(src, 1, false, func(msg *nats.Msg) {
		var tick *time.Ticker
		for {
			freed, ok := s.slots.Take()
			if ok {
				s.start(msg)
				return
			}
			if tick == nil {
				tick = time.NewTicker(max(s.cfg.AckWait/3, 10*time.Millisecond))
				defer tick.Stop()
			}
			select {
			case <-freed:
			case <-tick.C:
				_ = settler{b: s.b, msg: msg}.inProgress()
			case <-s.runCtx.Done():
				_ = settler{b: s.b, msg: msg}.Nak(s.runCtx, 0)
				return
			}
		}
	})
	for got > 0 && err == nil && s.runCtx.Err() == nil {
		n := s.slots.TakeFree()
		if n == 0 {
			break
		}
		got, err = s.pull(src, n, true, s.start)
		s.slots.Release(n - got)
		if got < n {
			break
		}
	}
	return err
}

// start queues msg for a handler. The caller took a place for it, which is given back once
// msg is settled or released.
func (s *subscription) start(msg *nats.Msg) { s.queue.Push(msg) }

// work runs in the queue's workers: it handles msgs (one, unless the subscription is a batch
// one) and gives their places back.
func (s *subscription) work(msgs []*nats.Msg) {
	if s.runCtx.Err() != nil { // stopping: no new handler starts
		s.release(msgs)
		return
	}
	if s.bh != nil {
		s.handleBatch(msgs)
	} else {
		for _, msg := range msgs {
			s.handle(msg)
		}
	}
	for range msgs {
		s.slots.Finished()
	}
}

// hold tells the server that queued messages are in progress, so their AckWait restarts.
func (s *subscription) hold(msgs []*nats.Msg) {
	for _, msg := range msgs {
		_ = settler{b: s.b, msg: msg}.inProgress()
	}
}

// release gives back the queued messages of a stopping subscription: a NAK without delay
// redelivers them at once to another member of the group.
func (s *subscription) release(msgs []*nats.Msg) {
	for _, msg := range msgs {
		_ = settler{b: s.b, msg: msg}.Nak(s.ctx, 0)
	}
	s.slots.Release(len(msgs))
}

// recreate creates src's consumer again if it disappeared. No responders also means a
// replicated consumer between two leaders: then the lookup times out, quickly, and the next
// pull finds the new leader.
func (s *subscription) recreate(log *slog.Logger, src *source) {
	ctx, cancel := context.WithTimeout(s.runCtx, time.Second)
	defer cancel()
	if _, err := src.ensure(ctx); err != nil {
		log.Warn("consumer cannot be created again", "error", err.Error())
	}
}

// handle turns msg into a delivery and lets bus.Dispatch run the handler and settle it.
func (s *subscription) handle(msg *nats.Msg) {
	d, st, bad, ok := s.delivery(msg)
	if !ok {
		return
	}
	h := s.h
	if bad != nil {
		h = terminalHandler(bad)
	}
	bus.Dispatch(s.ctx, d, st, h, s.cfg, s.b, s.b.ins)
}

// handleBatch turns msgs into deliveries and lets bus.DispatchBatch run the batch handler on
// them and settle each; a malformed one is dead-lettered on its own.
func (s *subscription) handleBatch(msgs []*nats.Msg) {
	ds := make([]bus.Delivery, 0, len(msgs))
	ss := make([]bus.Settler, 0, len(msgs))
	for _, msg := range msgs {
		d, st, bad, ok := s.delivery(msg)
		switch {
		case !ok:
		case bad != nil:
			bus.Dispatch(s.ctx, d, st, terminalHandler(bad), s.cfg, s.b, s.b.ins)
		default:
			ds = append(ds, d)
			ss = append(ss, st)
		}
	}
	if len(ds) > 0 {
		bus.DispatchBatch(s.ctx, ds, ss, s.bh, s.cfg, s.b, s.b.ins)
	}
}

// delivery turns msg into a delivery and its settler. It reports false when msg is not a
// JetStream delivery at all (then terminated), and returns in bad why a delivery cannot be
// handled: published around the bus (a bare NATS client), nothing a handler can rely on.
func (s *subscription) delivery(msg *nats.Msg) (d bus.Delivery, st settler, bad error, ok bool) {
	st = settler{b: s.b, msg: msg, acks: &s.acks}
	md, err := msg.Metadata()
	if err != nil {
		// Not a JetStream delivery: cannot happen on a pull consumer.
		s.b.logger.Error("consumer received a message without metadata", "consumer", s.cfg.Name, "subject", msg.Subject, "error", err.Error())
		_ = st.Term(s.ctx)
		return d, st, nil, false
	}
	d = bus.Delivery{
		Message:  s.b.decode(msg.Subject, msg.Header, msg.Data),
		Consumer: s.cfg.Name,
		Attempt:  int(md.NumDelivered),
		StoredAt: md.Timestamp.UTC(),
		Position: strconv.FormatUint(md.Sequence.Stream, 10),
	}
	if err := d.Validate(); err != nil {
		bad = fmt.Errorf("malformed message on %s: %w", msg.Subject, err)
	}
	return d, st, bad, true
}

// terminalHandler fails a malformed delivery for good.
func terminalHandler(err error) bus.Handler {
	return func(context.Context, bus.Delivery) error { return bus.Terminal(err) }
}

// decode rebuilds a bus message from a stored one. The subject is authoritative for tenant and
// type; the event id is Nops-Id, or else Nats-Msg-Id.
func (b *Bus) decode(subject string, h nats.Header, data []byte) bus.Message {
	m := bus.Message{
		ID:          h.Get(hdrID),
		Tenant:      h.Get(hdrTenant),
		Type:        h.Get(hdrType),
		TraceParent: h.Get(hdrTraceParent),
		Payload:     data,
	}
	if m.ID == "" {
		m.ID = h.Get(jetstream.MsgIDHeader)
	}
	if tenant, typ, ok := b.parseSubject(subject); ok {
		m.Tenant, m.Type = tenant, typ
	}
	return m
}
