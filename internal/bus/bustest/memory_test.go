package bustest_test

// A small in-memory bus.Bus, only to check the suite itself before and besides the real
// adapters: it is not an adapter and is not exported. It keeps each namespace's data in a map
// owned by the test, so reopening a namespace sees what was stored (Features.Persistent).

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/bus/bustest"
	"github.com/nops-kernel/nops/internal/errs"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestMemorySuite(t *testing.T) {
	var mu sync.Mutex
	stores := map[string]*memStore{}
	bustest.Run(t, func(t *testing.T, ns string) bus.Bus {
		mu.Lock()
		defer mu.Unlock()
		st, ok := stores[ns]
		if !ok {
			st = &memStore{dedup: map[string]time.Time{}, groups: map[string]*memGroup{}, dlqSeen: map[string]bool{}}
			stores[ns] = st
		}
		return &memBus{st: st, subs: map[*memSub]bool{}}
	}, bustest.Features{Persistent: true, DedupWindow: time.Minute})
}

func TestNamespace(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		ns := bustest.Namespace(t)
		if !bus.ValidToken(ns) || len(ns) != 13 || ns[0] != 't' || seen[ns] {
			t.Fatalf("Namespace() = %q: want a fresh valid token of 't' and 12 hex characters", ns)
		}
		seen[ns] = true
	}
}

const dedupWindow = time.Minute

type memEntry struct {
	pos      string
	msg      bus.Message
	storedAt time.Time
}

type memInflight struct {
	e        memEntry
	attempts int
	leased   bool
	until    time.Time // lease end (leased) or redelivery time (not leased)
}

type memGroup struct {
	filter    bus.Filter
	next      int // index of the next event to consider
	nextRetry int // index of the next retry entry to consider
	inflight  map[string]*memInflight
	order     []string // inflight keys in delivery order
}

type memDead struct {
	seq int64
	dl  bus.DeadLetter
}

type memStore struct {
	mu      sync.Mutex
	events  []memEntry
	retries []struct {
		consumer string
		e        memEntry
	}
	seq     int64
	dedup   map[string]time.Time
	groups  map[string]*memGroup
	dlq     []memDead
	dlqSeq  int64
	dlqSeen map[string]bool
}

type memBus struct {
	st     *memStore
	mu     sync.Mutex
	closed bool
	subs   map[*memSub]bool
}

var _ bus.Bus = (*memBus)(nil)

var errClosed = errs.New(errs.Unavailable, "bus closed")

func (b *memBus) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

func (b *memBus) Publish(_ context.Context, msgs ...bus.Message) error {
	for _, m := range msgs {
		if err := m.Validate(); err != nil {
			return err
		}
	}
	if b.isClosed() {
		return errClosed
	}
	st := b.st
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, m := range msgs {
		if st.dup("e:" + m.ID) {
			continue
		}
		st.seq++
		m.Payload = append([]byte(nil), m.Payload...)
		st.events = append(st.events, memEntry{pos: strconv.FormatInt(st.seq, 10), msg: m, storedAt: time.Now().UTC()})
	}
	return nil
}

// dup records key and reports whether it was seen within the window. st.mu is held.
func (st *memStore) dup(key string) bool {
	now := time.Now()
	if at, ok := st.dedup[key]; ok && now.Sub(at) < dedupWindow {
		return true
	}
	st.dedup[key] = now
	return false
}

func (b *memBus) Redeliver(_ context.Context, consumer string, m bus.Message, key string) error {
	if !bus.ValidToken(consumer) {
		return errs.Field("consumer", "not a consumer name")
	}
	if err := m.Validate(); err != nil {
		return err
	}
	if b.isClosed() {
		return errClosed
	}
	st := b.st
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.dup("r:" + consumer + ":" + key) {
		return nil
	}
	st.seq++
	st.retries = append(st.retries, struct {
		consumer string
		e        memEntry
	}{consumer, memEntry{pos: strconv.FormatInt(st.seq, 10), msg: m, storedAt: time.Now().UTC()}})
	return nil
}

func (b *memBus) Replay(_ context.Context, from, to time.Time, f bus.Filter, fn func(bus.Stored) error) (bus.ReplayResult, error) {
	b.st.mu.Lock()
	events := append([]memEntry(nil), b.st.events...)
	b.st.mu.Unlock()
	var res bus.ReplayResult
	if len(events) > 0 {
		res.Oldest = events[0].storedAt
	}
	for _, e := range events {
		if e.storedAt.Before(from) || !e.storedAt.Before(to) || !f.Match(e.msg.Tenant, e.msg.Type) {
			continue
		}
		res.Matched++
		if err := fn(bus.Stored{Message: e.msg, Position: e.pos, StoredAt: e.storedAt}); err != nil {
			return res, fmt.Errorf("replay: %w", err)
		}
	}
	return res, nil
}

func (b *memBus) ConsumerStats(_ context.Context, consumer string) (bus.ConsumerStats, error) {
	st := b.st
	st.mu.Lock()
	defer st.mu.Unlock()
	g, ok := st.groups[consumer]
	if !ok {
		return bus.ConsumerStats{}, errs.New(errs.NotFound, "no consumer %s", consumer)
	}
	var s bus.ConsumerStats
	for _, e := range st.events[g.next:] {
		if g.filter.Match(e.msg.Tenant, e.msg.Type) {
			s.Pending++
		}
	}
	for _, r := range st.retries[g.nextRetry:] {
		if r.consumer == consumer {
			s.Pending++
		}
	}
	s.AckPending = int64(len(g.inflight))
	return s, nil
}

func (b *memBus) Ping(context.Context) error {
	if b.isClosed() {
		return errClosed
	}
	return nil
}

func (b *memBus) Close() error {
	b.mu.Lock()
	b.closed = true
	subs := b.subs
	b.subs = map[*memSub]bool{}
	b.mu.Unlock()
	for s := range subs {
		_ = s.Stop(context.Background())
	}
	return nil
}

func (b *memBus) AddDeadLetter(_ context.Context, dl bus.DeadLetter) error {
	st := b.st
	st.mu.Lock()
	defer st.mu.Unlock()
	key := dl.ID + "\x00" + dl.Source
	if st.dlqSeen[key] {
		return nil
	}
	st.dlqSeen[key] = true
	st.dlqSeq++
	dl.Position = strconv.FormatInt(st.dlqSeq, 10)
	st.dlq = append(st.dlq, memDead{st.dlqSeq, dl})
	return nil
}

func (b *memBus) ListDeadLetters(_ context.Context, f bus.DLQFilter, after string, limit int) ([]bus.DeadLetter, string, error) {
	if limit < 1 {
		return nil, "", errs.Field("limit", "must be at least 1")
	}
	var from int64
	if after != "" {
		n, err := strconv.ParseInt(after, 10, 64)
		if err != nil || n < 1 {
			return nil, "", errs.Field("after", "malformed cursor")
		}
		from = n
	}
	st := b.st
	st.mu.Lock()
	defer st.mu.Unlock()
	var out []bus.DeadLetter
	for _, d := range st.dlq {
		if d.seq <= from || !f.Match(d.dl) {
			continue
		}
		if len(out) == limit {
			return out, out[limit-1].Position, nil
		}
		out = append(out, d.dl)
	}
	return out, "", nil
}

func (b *memBus) RemoveDeadLetters(_ context.Context, dls []bus.DeadLetter) error {
	rm := map[string]bool{}
	for _, dl := range dls {
		rm[dl.Position] = true
	}
	st := b.st
	st.mu.Lock()
	defer st.mu.Unlock()
	kept := st.dlq[:0]
	for _, d := range st.dlq {
		if !rm[d.dl.Position] {
			kept = append(kept, d)
		}
	}
	st.dlq = kept
	return nil
}

func (b *memBus) CountDeadLetters(_ context.Context, tenant string) (int64, error) {
	st := b.st
	st.mu.Lock()
	defer st.mu.Unlock()
	var n int64
	for _, d := range st.dlq {
		if tenant == "" || d.dl.Message.Tenant == tenant {
			n++
		}
	}
	return n, nil
}

func (b *memBus) Subscribe(ctx context.Context, cfg bus.ConsumerConfig, h bus.Handler) (bus.Subscription, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, errClosed
	}
	st := b.st
	st.mu.Lock()
	g, ok := st.groups[cfg.Name]
	if !ok {
		g = &memGroup{inflight: map[string]*memInflight{}}
		if cfg.DeliverNew {
			g.next, g.nextRetry = len(st.events), len(st.retries)
		}
		st.groups[cfg.Name] = g
	}
	g.filter = cfg.Filter
	st.mu.Unlock()

	s := &memSub{b: b, cfg: cfg, h: h, stop: make(chan struct{}), done: make(chan struct{})}
	b.subs[s] = true
	var wg sync.WaitGroup
	for range cfg.Concurrency {
		wg.Go(func() { s.work(ctx) })
	}
	go func() { wg.Wait(); close(s.done) }()
	return s, nil
}

type memSub struct {
	b        *memBus
	cfg      bus.ConsumerConfig
	h        bus.Handler
	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
}

func (s *memSub) Stop(ctx context.Context) error {
	s.stopOnce.Do(func() { close(s.stop) })
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *memSub) work(ctx context.Context) {
	for {
		select {
		case <-s.stop:
			return
		case <-ctx.Done():
			return
		default:
		}
		d, ok := s.fetch()
		if !ok {
			select {
			case <-s.stop:
				return
			case <-ctx.Done():
				return
			case <-time.After(2 * time.Millisecond):
			}
			continue
		}
		bus.Dispatch(context.WithoutCancel(ctx), d, &memSettler{s: s, key: d.Position}, s.h, s.cfg, s.b, nil)
	}
}

// fetch hands out the next delivery of the group: an expired lease or a due retry first, then
// the next matching event, then the next redelivery to this consumer.
func (s *memSub) fetch() (bus.Delivery, bool) {
	st := s.b.st
	st.mu.Lock()
	defer st.mu.Unlock()
	g := st.groups[s.cfg.Name]
	now := time.Now()
	deliver := func(key string, in *memInflight) (bus.Delivery, bool) {
		in.attempts++
		in.leased = true
		in.until = now.Add(s.cfg.AckWait)
		return bus.Delivery{Message: in.e.msg, Consumer: s.cfg.Name, Attempt: in.attempts, StoredAt: in.e.storedAt, Position: key}, true
	}
	for _, key := range g.order {
		if in, ok := g.inflight[key]; ok && !now.Before(in.until) {
			return deliver(key, in)
		}
	}
	add := func(e memEntry) (bus.Delivery, bool) {
		in := &memInflight{e: e}
		g.inflight[e.pos] = in
		g.order = append(g.order, e.pos)
		return deliver(e.pos, in)
	}
	for g.next < len(st.events) {
		e := st.events[g.next]
		g.next++
		if g.filter.Match(e.msg.Tenant, e.msg.Type) {
			return add(e)
		}
	}
	for g.nextRetry < len(st.retries) {
		r := st.retries[g.nextRetry]
		g.nextRetry++
		if r.consumer == s.cfg.Name {
			return add(r.e)
		}
	}
	return bus.Delivery{}, false
}

type memSettler struct {
	s   *memSub
	key string
}

func (m *memSettler) remove() {
	st := m.s.b.st
	st.mu.Lock()
	defer st.mu.Unlock()
	g := st.groups[m.s.cfg.Name]
	delete(g.inflight, m.key)
	for i, k := range g.order {
		if k == m.key {
			g.order = append(g.order[:i:i], g.order[i+1:]...)
			break
		}
	}
}

func (m *memSettler) Ack(context.Context) error  { m.remove(); return nil }
func (m *memSettler) Term(context.Context) error { m.remove(); return nil }

func (m *memSettler) Nak(_ context.Context, delay time.Duration) error {
	st := m.s.b.st
	st.mu.Lock()
	defer st.mu.Unlock()
	in, ok := st.groups[m.s.cfg.Name].inflight[m.key]
	if !ok {
		return errors.New("nak: no such delivery")
	}
	in.leased = false
	in.until = time.Now().Add(delay)
	return nil
}
