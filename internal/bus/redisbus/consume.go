package redisbus

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/errs"
)

const (
	// maxBlock bounds one blocking XREADGROUP: how long Stop may wait for the reader, and how
	// late a retry asked for while the reader blocks may be picked up.
	maxBlock = 250 * time.Millisecond
	// retryPollInterval paces the non-blocking reads of the retry stream while it is empty.
	retryPollInterval = 100 * time.Millisecond
	// errorBackoffMax caps the wait between attempts while Redis fails.
	errorBackoffMax = time.Second
	// staleConsumerIdle: consumers of a group idle for that long with nothing pending (left by
	// processes that are gone) are deleted; gcEveryPasses paces that clean-up.
	staleConsumerIdle = time.Hour
	gcEveryPasses     = 60
	// stopCleanupTimeout bounds the clean-up Redis calls once a subscription stopped.
	stopCleanupTimeout = 5 * time.Second
	// claimLogEvery rate-limits the warnings of failing claims.
	claimLogEvery = 30 * time.Second
)

// Subscribe creates the consumer group cfg.Name on the event stream and on the consumer's retry
// stream if needed and runs h on their entries until ctx ends or the subscription is stopped.
// Each Subscribe is a consumer of its own ("<host>-<random>") in the group.
//
// Filtering is client-side (consumer groups cannot filter): every subscription of a group must
// use the same Filter, since one that does not want an entry acknowledges it for the group.
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
		return nil, err
	}
	if b.closed.Load() {
		return nil, errs.New(errs.Unavailable, "event bus closed")
	}
	s := &subscription{
		b:        b,
		cfg:      cfg,
		h:        h,
		bh:       bh,
		consumer: consumerName(),
		events:   b.keys.events(),
		retry:    b.keys.retry(cfg.Name),
		delay:    b.keys.delay(cfg.Name),
		base:     context.WithoutCancel(ctx),
		slots:    bus.NewPlaces(cfg.Handlers(), max(cfg.Prefetch, 0)),
		stopCh:   make(chan struct{}),
		loopDone: make(chan struct{}),
		finished: make(chan struct{}),
		cursors:  map[string]string{kindEvents: "0-0", kindRetry: "0-0"},
	}
	s.log = b.logger.With("consumer", cfg.Name, "instance", s.consumer)
	s.queue = bus.NewQueue(bus.QueueOptions[queued]{
		Workers: cfg.Concurrency, Batch: cfg.Batch, Capacity: cfg.QueueCapacity(), HoldEvery: cfg.HoldEvery(),
		Handle: s.work, Hold: s.hold, Release: s.release, Tick: s.slots.Progress,
	})
	if err := s.ensureGroups(ctx); err != nil {
		return nil, err
	}
	if err := b.saveFilter(ctx, cfg.Name, cfg.Filter); err != nil {
		return nil, err
	}
	if !b.addSub(s) {
		return nil, errs.New(errs.Unavailable, "event bus closed")
	}
	s.acks = newAckBatcher(s)
	s.stopWatch = context.AfterFunc(ctx, s.requestStop)
	go s.run()
	return s, nil
}

// consumerName names one subscription inside its group: the host, for operators reading XINFO
// CONSUMERS, and random bytes, so that subscriptions never share a pending list.
func consumerName() string {
	host, _ := os.Hostname()
	host = strings.Map(func(r rune) rune {
		if r == '-' || r == '_' || r == '.' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return -1
	}, host)
	if len(host) > 40 {
		host = host[:40]
	}
	if host == "" {
		host = "nops"
	}
	var r [6]byte
	_, _ = rand.Read(r[:])
	return host + "-" + hex.EncodeToString(r[:])
}

// subscription is one running consumer.
//
// Places (slots): one per entry read and not yet settled, queued or in a handler (see
// bus.Places and bus.Queue). The reader loop takes at least one free place before each round
// and reads or claims at most as many entries as it holds places, and pushes the deliveries to
// the queue, whose workers run the handlers; each delivery keeps its place until its handler
// has settled it. An Ack only queues the acknowledgement in acks (see ackBatcher), so the place
// is freed without a round trip.
type subscription struct {
	b        *Bus
	cfg      bus.ConsumerConfig
	h        bus.Handler      // nil for a batch subscription
	bh       bus.BatchHandler // set for a batch subscription
	consumer string           // this subscription's consumer in the group
	events   string           // keys
	retry    string
	delay    string
	base     context.Context // the handlers' parent: Subscribe's ctx without its cancellation
	log      *slog.Logger

	slots *bus.Places
	queue *bus.Queue[queued]
	acks  *ackBatcher

	stopOnce  sync.Once
	stopCh    chan struct{} // closed when stopping starts
	loopDone  chan struct{} // closed when the reader loop has returned
	finished  chan struct{} // closed when the subscription has fully stopped
	stopWatch func() bool   // stops the watch of Subscribe's ctx

	dueMu   sync.Mutex
	nextDue time.Time // earliest retry due known to this process; zero: none

	// Owned by the reader loop.
	cursors       map[string]string // XAUTOCLAIM cursor per stream kind
	nextClaim     time.Time
	passes        int
	lastRetryRead time.Time
	retryBusy     bool       // the last read of the retry stream filled its count
	skipped       []*settler // entries to acknowledge without a handler (filter, not a message)
	lastClaimLog  time.Time
}

// ensureGroups creates the consumer group on the event stream (at its end with DeliverNew, else
// at its start) and on the retry stream (always at its start: everything there is for this
// consumer), with the streams if needed.
func (s *subscription) ensureGroups(ctx context.Context) error {
	start := "0"
	if s.cfg.DeliverNew {
		start = "$"
	}
	for _, g := range []struct{ key, start string }{{s.events, start}, {s.retry, "0"}} {
		err := s.b.rdb.XGroupCreateMkStream(ctx, g.key, s.cfg.Name, g.start).Err()
		if err != nil && !redis.HasErrorPrefix(err, "BUSYGROUP") {
			return unavailable(fmt.Sprintf("create consumer group %s", s.cfg.Name), err)
		}
	}
	return nil
}

// Stop stops reading, waits (up to ctx) for the running handlers to settle their messages, sends
// the queued acknowledgements and waits for Redis's replies (an entry acknowledged before Stop is
// not redelivered), and removes this subscription's consumer from the group when nothing is
// pending for it.
func (s *subscription) Stop(ctx context.Context) error {
	s.requestStop()
	select {
	case <-s.finished:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop consumer %s: handlers still running: %w", s.cfg.Name, context.Cause(ctx))
	}
}

func (s *subscription) requestStop() {
	s.stopOnce.Do(func() {
		close(s.stopCh)
		go s.finish()
	})
}

func (s *subscription) stopping() bool {
	select {
	case <-s.stopCh:
		return true
	default:
		return false
	}
}

func (s *subscription) finish() {
	s.stopWatch()
	<-s.loopDone
	s.queue.Stop()
	s.queue.Wait()
	s.acks.close()
	ctx, cancel := context.WithTimeout(context.Background(), stopCleanupTimeout)
	for _, key := range []string{s.events, s.retry} {
		err := s.b.runScript(ctx, delConsumerScript, []string{key}, s.cfg.Name, s.consumer).Err()
		if err != nil && !redis.HasErrorPrefix(err, "NOGROUP") {
			s.log.Debug("could not remove the consumer from its group", "stream", key, "error", err.Error())
		}
	}
	cancel()
	s.b.removeSub(s)
	close(s.finished)
}

// acquire waits for a free place and takes every other free one. It returns false when the
// subscription stops first.
func (s *subscription) acquire() (int, bool) {
	return s.slots.Wait(s.stopCh, true)
}

// run is the reader loop.
func (s *subscription) run() {
	defer close(s.loopDone)
	failing := false
	var backoff time.Duration
	for {
		n, ok := s.acquire()
		if !ok {
			return
		}
		err := s.round(s.base, &n)
		s.slots.Release(n)
		if err == nil {
			if failing {
				s.log.Info("redis consumer resumed")
				failing = false
			}
			backoff = 0
			continue
		}
		if s.stopping() {
			return
		}
		if !failing {
			s.log.Warn("redis consumer failing; retrying", "error", err.Error())
			failing = true
		}
		if redis.HasErrorPrefix(err, "NOGROUP") {
			// The streams were deleted (FLUSHDB, an operator): start again from what exists.
			if gerr := s.ensureGroups(s.base); gerr != nil {
				s.log.Debug("could not recreate the consumer groups", "error", gerr.Error())
			} else if ferr := s.b.saveFilter(s.base, s.cfg.Name, s.cfg.Filter); ferr != nil {
				s.log.Debug("could not save the consumer's filter again", "error", ferr.Error())
			}
		}
		backoff = min(max(2*backoff, 50*time.Millisecond), errorBackoffMax)
		t := time.NewTimer(backoff)
		select {
		case <-s.stopCh:
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// round claims and reads up to *n entries and starts their handlers; *n is left with the slots
// not used.
func (s *subscription) round(ctx context.Context, n *int) error {
	now := time.Now()
	periodic := !now.Before(s.nextClaim)
	// A failing claim does not stop the reads: new events keep flowing while retries and
	// stalled deliveries wait for the next pass.
	if periodic || s.retryDue(now) {
		if err := s.claimDue(ctx, n); err != nil {
			s.claimFailed(now, fmt.Errorf("claim due retries: %w", err))
		}
	}
	if periodic {
		s.nextClaim = now.Add(s.b.cfg.ClaimInterval)
		for _, kind := range []string{kindEvents, kindRetry} {
			if *n == 0 {
				break
			}
			if err := s.autoClaim(ctx, kind, n); err != nil {
				s.claimFailed(now, fmt.Errorf("claim stalled deliveries: %w", err))
				break
			}
		}
		s.passes++
		if s.passes%gcEveryPasses == 0 {
			s.removeStaleConsumers(ctx)
		}
	}
	if *n > 0 && (s.retryBusy || now.Sub(s.lastRetryRead) >= retryPollInterval) && !s.stopping() {
		s.lastRetryRead = now
		count := *n
		got, err := s.read(ctx, kindRetry, count, -1, n)
		if err != nil {
			return fmt.Errorf("read %s: %w", s.retry, err)
		}
		s.retryBusy = got == count
	}
	if *n > 0 && !s.stopping() {
		if _, err := s.read(ctx, kindEvents, *n, s.blockFor(now), n); err != nil {
			return fmt.Errorf("read %s: %w", s.events, err)
		}
	}
	return nil
}

// claimFailed logs a failed claim, at most once per claimLogEvery.
func (s *subscription) claimFailed(now time.Time, err error) {
	if now.Sub(s.lastClaimLog) < claimLogEvery {
		return
	}
	s.lastClaimLog = now
	s.log.Warn("redis consumer could not claim deliveries; retrying", "error", err.Error())
}

// blockFor is how long the next read may block: until the next claim pass or known retry, at
// most maxBlock.
func (s *subscription) blockFor(now time.Time) time.Duration {
	until := s.nextClaim
	s.dueMu.Lock()
	if !s.nextDue.IsZero() && s.nextDue.Before(until) {
		until = s.nextDue
	}
	s.dueMu.Unlock()
	// BLOCK 0 would block for ever: at least one millisecond.
	return min(max(until.Sub(now), time.Millisecond), maxBlock)
}

func (s *subscription) retryDue(now time.Time) bool {
	s.dueMu.Lock()
	defer s.dueMu.Unlock()
	return !s.nextDue.IsZero() && !now.Before(s.nextDue)
}

// noteDue records that a retry is due at t (a Nak of this process), so the loop claims it then
// rather than at the next periodic pass.
func (s *subscription) noteDue(t time.Time) {
	s.dueMu.Lock()
	if s.nextDue.IsZero() || t.Before(s.nextDue) {
		s.nextDue = t
	}
	s.dueMu.Unlock()
}

// read reads up to count new entries of a stream kind (block < 0: without blocking) and starts
// their handlers. It returns how many entries it read.
func (s *subscription) read(ctx context.Context, kind string, count int, block time.Duration, n *int) (int, error) {
	key := s.events
	if kind == kindRetry {
		key = s.retry
	}
	res, err := s.b.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group: s.cfg.Name, Consumer: s.consumer, Streams: []string{key, ">"}, Count: int64(count), Block: block,
	}).Result()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	got := 0
	for _, st := range res {
		for _, m := range st.Messages {
			got++
			s.handle(ctx, kind, m.ID, m.Values, 1, n)
		}
	}
	s.ackSkipped(ctx)
	return got, nil
}

// claimDue claims the retries that are due, up to *n.
func (s *subscription) claimDue(ctx context.Context, n *int) error {
	s.dueMu.Lock()
	s.nextDue = time.Time{}
	s.dueMu.Unlock()
	now := time.Now()
	res, err := s.b.runScript(ctx, claimDueScript, []string{s.delay, s.events, s.retry}, s.cfg.Name, s.consumer, *n).Slice()
	if err != nil {
		return err
	}
	if len(res) != 2 {
		return fmt.Errorf("unexpected reply of %d elements", len(res))
	}
	if wait, ok := res[1].(int64); ok && wait >= 0 {
		s.noteDue(now.Add(time.Duration(wait) * time.Millisecond))
	}
	s.handleClaimed(ctx, res[0], n)
	return nil
}

// autoClaim takes over, up to *n, deliveries of a stream kind left unsettled beyond AckWait.
func (s *subscription) autoClaim(ctx context.Context, kind string, n *int) error {
	key := s.events
	if kind == kindRetry {
		key = s.retry
	}
	res, err := s.b.runScript(ctx, autoClaimScript, []string{key, s.delay},
		s.cfg.Name, s.consumer, s.cfg.AckWait.Milliseconds(), s.cursors[kind], *n, kind).Slice()
	if err != nil {
		return err
	}
	if len(res) != 2 {
		return fmt.Errorf("unexpected reply of %d elements", len(res))
	}
	if next, ok := res[0].(string); ok && validEntryID(next) {
		s.cursors[kind] = next
	}
	s.handleClaimed(ctx, res[1], n)
	return nil
}

// handleClaimed starts the handlers of a claim script's {{member, fields, count}, ...}.
func (s *subscription) handleClaimed(ctx context.Context, reply any, n *int) {
	list, _ := reply.([]any)
	for _, e := range list {
		t, ok := e.([]any)
		if !ok || len(t) != 3 {
			continue
		}
		member, _ := t[0].(string)
		kind, id, ok := strings.Cut(member, "/")
		if !ok {
			continue
		}
		attempt, _ := t[2].(int64)
		s.handle(ctx, kind, id, flatValues(t[1]), max(int(attempt), 1), n)
	}
	s.ackSkipped(ctx)
}

// handle starts the handler of one entry in one of the *n slots, or acknowledges the entry at
// once when it is not for this consumer (filter) or not a message at all.
func (s *subscription) handle(ctx context.Context, kind, id string, fields map[string]any, attempt int, n *int) {
	key := s.events
	if kind == kindRetry {
		key = s.retry
	}
	st := &settler{s: s, key: key, id: id, member: kind + "/" + id}
	m, storedAt, err := decodeMessage(id, fields)
	if err != nil {
		s.log.Warn("dropping a stream entry that is not a bus message", "stream", key, "entry", id, "error", err.Error())
		s.skipped = append(s.skipped, st)
		return
	}
	if kind == kindEvents && !s.cfg.Filter.Match(m.Tenant, m.Type) {
		s.skipped = append(s.skipped, st)
		return
	}
	if *n == 0 {
		// Cannot happen (reads and claims ask for at most *n entries); the entry stays pending
		// and is claimed again after AckWait rather than run beyond Handlers().
		s.log.Error("more entries than free handler slots; leaving one for redelivery", "entry", id)
		return
	}
	*n--
	d := bus.Delivery{Message: m, Consumer: s.cfg.Name, Attempt: attempt, StoredAt: storedAt, Position: st.member}
	s.queue.Push(queued{d: d, st: st})
}

// queued is a delivery waiting in the queue, with its settler.
type queued struct {
	d  bus.Delivery
	st *settler
}

// work runs in the queue's workers: it dispatches the deliveries (one, unless the subscription
// is a batch one) and gives their places back.
func (s *subscription) work(qs []queued) {
	if s.stopping() { // no new handler starts
		s.release(qs)
		return
	}
	if s.bh != nil {
		ds := make([]bus.Delivery, len(qs))
		ss := make([]bus.Settler, len(qs))
		for i, q := range qs {
			ds[i], ss[i] = q.d, q.st
		}
		bus.DispatchBatch(s.base, ds, ss, s.bh, s.cfg, s.b, s.b.ins)
	} else {
		for _, q := range qs {
			bus.Dispatch(s.base, q.d, q.st, s.h, s.cfg, s.b, s.b.ins)
		}
	}
	for range qs {
		s.slots.Finished()
	}
}

// hold resets the idle time of queued entries (XCLAIM to this same consumer, JUSTID: without
// counting a delivery), so that they are not claimed as stalled while they wait.
func (s *subscription) hold(qs []queued) {
	ids := map[string][]string{}
	for _, q := range qs {
		ids[q.st.key] = append(ids[q.st.key], q.st.id)
	}
	ctx, cancel := context.WithTimeout(s.base, stopCleanupTimeout)
	defer cancel()
	_, err := s.b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for key, list := range ids {
			p.XClaimJustID(ctx, &redis.XClaimArgs{Stream: key, Group: s.cfg.Name, Consumer: s.consumer, MinIdle: 0, Messages: list})
		}
		return nil
	})
	if err != nil {
		s.log.Debug("could not mark queued deliveries in progress; they may be claimed by another consumer", "error", err.Error())
	}
}

// release gives back the queued deliveries of a stopping subscription: each is scheduled for a
// retry due at once (a delivery attempt), claimed by whichever consumer of the group comes first.
func (s *subscription) release(qs []queued) {
	ctx, cancel := context.WithTimeout(s.base, stopCleanupTimeout)
	defer cancel()
	for _, q := range qs {
		if err := q.st.Nak(ctx, 0); err != nil {
			s.log.Debug("could not give back a queued delivery; it is claimed after ack wait", "entry", q.st.member, "error", err.Error())
		}
	}
	s.slots.Release(len(qs))
}

// ackSkipped hands the acknowledgements of the entries handle skipped to the batcher. One that
// fails leaves its entry pending: claimed, and skipped again, after AckWait.
func (s *subscription) ackSkipped(ctx context.Context) {
	if len(s.skipped) == 0 {
		return
	}
	for _, st := range s.skipped {
		if err := st.Ack(ctx); err != nil {
			s.log.Debug("could not acknowledge a skipped entry", "entry", st.member, "error", err.Error())
		}
	}
	clear(s.skipped)
	s.skipped = s.skipped[:0]
}

// removeStaleConsumers deletes the group's consumers that processes long gone left behind, once
// nothing is pending for them.
func (s *subscription) removeStaleConsumers(ctx context.Context) {
	for _, key := range []string{s.events, s.retry} {
		list, err := s.b.rdb.XInfoConsumers(ctx, key, s.cfg.Name).Result()
		if err != nil {
			continue
		}
		for _, c := range list {
			if c.Name == s.consumer || c.Pending > 0 || c.Idle < staleConsumerIdle {
				continue
			}
			if err := s.b.runScript(ctx, delConsumerScript, []string{key}, s.cfg.Name, c.Name).Err(); err != nil {
				s.log.Debug("could not remove a stale consumer", "stream", key, "stale", c.Name, "error", err.Error())
			}
		}
	}
}

// settler settles one delivery: an entry pending in the group, maybe waiting in the delay set.
type settler struct {
	s      *subscription
	key    string // stream
	id     string // entry id
	member string // delay set member, also the delivery's Position
}

// Ack acknowledges the entry and forgets any retry scheduled for it, asynchronously: it queues
// XACK and ZREM in the subscription's batcher and returns, without waiting for Redis (it waits
// only while the batcher's queue is full). A nil error therefore does not mean Redis has the
// acknowledgement: one that fails is logged and the entry is redelivered after AckWait. Stop
// and Bus.Close send every queued acknowledgement and wait for Redis's replies.
func (st *settler) Ack(ctx context.Context) error {
	queued, err := st.s.acks.enqueue(ctx, st)
	if err != nil {
		return unavailable("acknowledge "+st.member, err)
	}
	if queued {
		return nil
	}
	return st.ackNow(ctx)
}

// ackNow acknowledges the entry in one round trip (the batcher is closed).
func (st *settler) ackNow(ctx context.Context) error {
	_, err := st.s.b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.XAck(ctx, st.key, st.s.cfg.Name, st.id)
		p.ZRem(ctx, st.s.delay, st.member)
		return nil
	})
	if err != nil {
		return unavailable("acknowledge "+st.member, err)
	}
	return nil
}

// Nak leaves the entry pending and schedules its retry after delay; it is claimed (counting a
// delivery) when due.
func (st *settler) Nak(ctx context.Context, delay time.Duration) error {
	if err := st.s.b.runScript(ctx, nakScript, []string{st.s.delay}, max(delay, 0).Milliseconds(), st.member).Err(); err != nil {
		return unavailable("schedule the retry of "+st.member, err)
	}
	st.s.noteDue(time.Now().Add(delay))
	return nil
}

// Term removes the entry from the consumer: Dispatch has stored it in the DLQ. Like Ack, it
// only queues the acknowledgement.
func (st *settler) Term(ctx context.Context) error { return st.Ack(ctx) }

// encodeMeta is the meta field of m's entry without its first line: tenant, type and
// traceparent (none of which holds a newline: bus.Message.Validate) and the id, last because it
// may hold anything.
func encodeMeta(m bus.Message) string {
	return m.Tenant + "\n" + m.Type + "\n" + m.TraceParent + "\n" + m.ID
}

// metaField is the meta field Publish writes: an empty first line (once the server's time in µs,
// now in the entry id only, to the millisecond), then encodeMeta's lines.
func metaField(m bus.Message) string {
	return "\n" + m.Tenant + "\n" + m.Type + "\n" + m.TraceParent + "\n" + m.ID
}

// decodeMessage reads a message from an entry's fields as go-redis returns them (string
// values; anything else reads as missing). It reads go-redis's map directly rather than a
// converted copy: one map less per delivered entry. Entries have the fields meta
// ("<µs>\n<tenant>\n<type>\n<traceparent>\n<id>", the first line empty since publishes no
// longer run XADD in a script, see metaField) and data; entries written before meta existed have
// the fields id, tenant, type, tp (when set), ts and data, and still decode.
func decodeMessage(id string, f map[string]any) (bus.Message, time.Time, error) {
	str := func(k string) string {
		v, _ := f[k].(string)
		return v
	}
	var m bus.Message
	var ts string
	if meta, ok := f["meta"].(string); ok {
		var rest string
		var ok1, ok2, ok3, ok4 bool
		ts, rest, ok1 = strings.Cut(meta, "\n")
		m.Tenant, rest, ok2 = strings.Cut(rest, "\n")
		m.Type, rest, ok3 = strings.Cut(rest, "\n")
		m.TraceParent, m.ID, ok4 = strings.Cut(rest, "\n")
		if !ok1 || !ok2 || !ok3 || !ok4 {
			return bus.Message{}, time.Time{}, errors.New("the entry's meta field has fewer than five lines")
		}
	} else {
		m = bus.Message{ID: str("id"), Tenant: str("tenant"), Type: str("type"), TraceParent: str("tp")}
		ts = str("ts")
	}
	if m.ID == "" || m.Tenant == "" || m.Type == "" {
		return bus.Message{}, time.Time{}, errors.New("the entry has no id, tenant or type")
	}
	m.Payload = []byte(str("data"))
	return m, storedTime(id, ts), nil
}

// storedTime is when an entry was stored: the entry id's millisecond, refined by the ts field's
// microseconds (the server's TIME when the script of earlier versions ran) when the entry has
// them; entries published now have none and read as the start of the id's millisecond. When ts falls in another millisecond than
// the id (the clock ticked between TIME and XADD, or stepped back), the id wins: the time is the
// start or the end of the id's millisecond, so StoredAt always agrees with the entry id and its order.
func storedTime(id, ts string) time.Time {
	at := entryTime(id)
	us, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || us <= 0 {
		return at
	}
	switch ms := us / 1000; {
	case ms == at.UnixMilli():
		return time.UnixMicro(us).UTC()
	case ms < at.UnixMilli():
		return at
	default:
		return at.Add(999 * time.Microsecond)
	}
}

// valuesOf converts go-redis's entry values.
func valuesOf(v map[string]any) map[string]string {
	out := make(map[string]string, len(v))
	for k, x := range v {
		if s, ok := x.(string); ok {
			out[k] = s
		}
	}
	return out
}

// flatValues converts a script's {field, value, ...} list.
func flatValues(v any) map[string]any {
	list, _ := v.([]any)
	out := make(map[string]any, len(list)/2)
	for i := 0; i+1 < len(list); i += 2 {
		if k, ok := list[i].(string); ok {
			out[k] = list[i+1]
		}
	}
	return out
}
