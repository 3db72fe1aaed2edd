package relay_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/events"
	"github.com/nops-kernel/nops/internal/relay"
)

const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// newRelay makes a relay with test-friendly defaults: quick polling and retries.
func newRelay(t *testing.T, s Store, leases relay.LeaseStore, pub bus.Publisher, opts relay.Options) *relay.Relay {
	t.Helper()
	if opts.PollInterval == 0 {
		opts.PollInterval = 5 * time.Millisecond
	}
	if opts.BackoffInitial == 0 {
		opts.BackoffInitial, opts.BackoffMax = time.Millisecond, 10*time.Millisecond
	}
	if leases == nil {
		leases = s
	}
	r, err := relay.New(s, leases, pub, opts)
	if err != nil {
		t.Fatalf("relay.New: %v", err)
	}
	return r
}

// TestPublishesInOrder publishes records of several subjects in several batches: every record
// once, each subject in commit order, with the message built from the record.
func TestPublishesInOrder(t *testing.T) {
	eachBackend(t, func(t *testing.T, open func(t *testing.T) Store) {
		s := open(t)
		var want []events.OutboxRecord
		traced := map[string]bool{}
		for i := range 60 {
			tp := ""
			if i%3 == 0 {
				tp = traceparent
			}
			rec := record(t, i%4, tp) // four subjects, interleaved
			traced[rec.ID] = tp != ""
			want = append(want, rec)
		}
		// Committed in several transactions, some before the relay starts and some after.
		add(t, s, want[:25]...)
		pub := newRecorder(0)
		r := newRelay(t, s, nil, pub.as("a"), relay.Options{Batch: 7})
		run(t, r)
		add(t, s, want[25:40]...)
		r.Notify()
		add(t, s, want[40:]...)
		r.Notify()
		waitFor(t, "every record published", func() bool { return pub.count() == len(want) })
		got := pub.messages()
		checkOrder(t, want, got)
		byID := map[string]events.OutboxRecord{}
		for _, rec := range want {
			byID[rec.ID] = rec
		}
		for _, m := range got {
			rec := byID[m.ID]
			tp := ""
			if traced[m.ID] {
				tp = traceparent
			}
			wantMsg := bus.Message{ID: rec.ID, Tenant: rec.Tenant, Type: string(rec.Type), TraceParent: tp, Payload: rec.Payload}
			if diff := cmp.Diff(wantMsg, m); diff != "" {
				t.Errorf("message %s (-want +got):\n%s", m.ID, diff)
			}
		}
		waitFor(t, "every record marked published", func() bool { return len(pending(t, s)) == 0 })
	})
}

// idleStore counts the rounds that found the outbox empty, so a test knows the relay waits.
type idleStore struct {
	Store
	empty atomic.Int64
}

func (s *idleStore) PendingOutbox(ctx context.Context, limit int) ([]events.OutboxRecord, error) {
	recs, err := s.Store.PendingOutbox(ctx, limit)
	if err == nil && len(recs) == 0 {
		s.empty.Add(1)
	}
	return recs, err
}

// TestNotify: with a poll interval far beyond the test's deadline, records are published only
// because Notify wakes the relay, and a full batch is followed by the next one at once.
func TestNotify(t *testing.T) {
	eachBackend(t, func(t *testing.T, open func(t *testing.T) Store) {
		s := &idleStore{Store: open(t)}
		pub := newRecorder(0)
		r := newRelay(t, s, s.Store, pub.as("a"), relay.Options{Batch: 2, PollInterval: time.Hour, LeaseTTL: time.Hour})
		run(t, r)
		waitFor(t, "the relay idle", func() bool { return s.empty.Load() >= 1 })
		want := []events.OutboxRecord{record(t, 1, ""), record(t, 2, ""), record(t, 1, ""), record(t, 3, ""), record(t, 1, "")}
		add(t, s, want...)
		r.Notify()
		r.Notify() // coalesces
		waitFor(t, "every record published", func() bool { return pub.count() == len(want) })
		checkOrder(t, want, pub.messages())
	})
}

// TestLateCommit holds a PostgreSQL transaction with a lower seq open while a later one commits
// and is published: the late commit is still published.
func TestLateCommit(t *testing.T) {
	s := postgresDatabase(t)(t)
	ctx := t.Context()
	early, late := record(t, 1, ""), record(t, 1, "")
	pub := newRecorder(0)
	// Only Notify wakes the relay: a poll between the first transaction's commit and the check of
	// what is pending would publish it early and fail the check on a slow machine.
	r := newRelay(t, s, nil, pub.as("a"), relay.Options{PollInterval: time.Hour})
	run(t, r)

	inserted, release := make(chan struct{}), make(chan struct{})
	releaseOnce := sync.OnceFunc(func() { close(release) })
	result, done := make(chan error, 1), make(chan struct{})
	go func() {
		defer close(done)
		result <- s.InTx(ctx, func(ctx context.Context) error {
			if err := s.AddToOutbox(ctx, early); err != nil {
				return err
			}
			close(inserted)
			<-release
			return nil
		})
	}()
	t.Cleanup(func() { releaseOnce(); <-done })
	<-inserted
	add(t, s, late)
	r.Notify()
	waitFor(t, "the later commit published", func() bool { return pub.count() == 1 })
	waitFor(t, "the later commit marked", func() bool { return len(pending(t, s)) == 0 })

	releaseOnce()
	if err := <-result; err != nil {
		t.Fatalf("first transaction: %v", err)
	}
	p := pending(t, s)
	if len(p) != 1 || p[0].ID != early.ID {
		t.Fatalf("pending after the late commit = %v, want %s", p, early.ID)
	}
	earlySeq := p[0].Seq
	r.Notify()
	waitFor(t, "the late commit published", func() bool { return pub.count() == 2 })
	got := pub.messages()
	if got[0].ID != late.ID || got[1].ID != early.ID {
		t.Fatalf("published %s then %s, want %s (seq above) then %s (seq %d)", got[0].ID, got[1].ID, late.ID, early.ID, earlySeq)
	}
}

// TestPublishFailure: while the bus fails, attempts grow and nothing is marked; once it
// recovers, everything is published in order.
func TestPublishFailure(t *testing.T) {
	eachBackend(t, func(t *testing.T, open func(t *testing.T) Store) {
		s := open(t)
		reader := sdkmetric.NewManualReader()
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
		t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
		pub := newRecorder(0)
		pub.setFail(errs.New(errs.Unavailable, "bus down"))
		want := []events.OutboxRecord{record(t, 1, ""), record(t, 2, ""), record(t, 1, "")}
		add(t, s, want...)
		r := newRelay(t, s, nil, pub.as("a"), relay.Options{Meter: mp.Meter("test")})
		run(t, r)
		waitFor(t, "three failed attempts", func() bool {
			p := pending(t, s)
			return len(p) == len(want) && p[0].Attempts >= 3
		})
		for _, p := range pending(t, s) {
			if p.PublishedAt != nil {
				t.Errorf("record %s marked published while the bus fails", p.ID)
			}
		}
		if n := pub.count(); n != 0 {
			t.Fatalf("%d messages stored by a failing bus", n)
		}
		pub.setFail(nil)
		waitFor(t, "every record published", func() bool { return pub.count() == len(want) })
		checkOrder(t, want, pub.messages())
		waitFor(t, "every record marked published", func() bool { return len(pending(t, s)) == 0 })
		if got := counter(t, reader, "nops_outbox_published_total"); got != int64(len(want)) {
			t.Errorf("nops_outbox_published_total = %d, want %d", got, len(want))
		}
		if got := counter(t, reader, "nops_outbox_publish_failures_total"); got < 3*int64(len(want)) {
			t.Errorf("nops_outbox_publish_failures_total = %d, want at least %d", got, 3*len(want))
		}
	})
}

// TestTwoRelays runs two relays on one database while records are committed and the leader is
// stopped cleanly (releasing the lease), stopped as by a crash (the lease left to expire), or
// cut off from the lease table while it keeps publishing (its renewals fail, so it must stop
// before its lease expires). Every record is published, each subject in order, and the two
// relays never publish at the same time.
func TestTwoRelays(t *testing.T) {
	eachBackend(t, func(t *testing.T, open func(t *testing.T) Store) {
		stores := []Store{open(t), open(t)}
		pub := newRecorder(time.Millisecond)
		const ttl = time.Second
		relays := make([]*relay.Relay, 2)
		stops := make([]func(), 2)
		leases := make([]*crashLeases, 2)
		for i := range relays {
			leases[i] = &crashLeases{LeaseStore: stores[i]}
			relays[i] = newRelay(t, stores[i], leases[i], pub.as(fmt.Sprintf("relay-%d", i)), relay.Options{
				Holder: fmt.Sprintf("relay-%d", i), Batch: 5, LeaseTTL: ttl,
			})
			stops[i] = run(t, relays[i])
		}

		var want []events.OutboxRecord
		commit := func(n int) {
			t.Helper()
			var rs []events.OutboxRecord
			for range n {
				rs = append(rs, record(t, len(want)%5, ""))
				want = append(want, rs[len(rs)-1])
			}
			add(t, stores[len(want)%2], rs...)
			for _, r := range relays {
				r.Notify()
			}
		}
		leader := func() int {
			for i, r := range relays {
				if r.Leader() {
					return i
				}
			}
			return -1
		}
		commit(20)
		for step, mode := range []string{"clean stop", "crash", "stall", "clean stop", "crash", "stall"} {
			waitFor(t, "a leader", func() bool { return leader() >= 0 })
			i := leader()
			commit(15)
			switch mode {
			case "clean stop", "crash":
				leases[i].crashed.Store(mode == "crash")
				stops[i]() // publishing may be in progress
			case "stall":
				leases[i].stalled.Store(true)
			}
			commit(15)
			waitFor(t, fmt.Sprintf("step %d (%s): the other relay taking over", step, mode), func() bool { return relays[1-i].Leader() })
			commit(10)
			leases[i].crashed.Store(false)
			leases[i].stalled.Store(false)
			if mode != "stall" {
				stops[i] = run(t, relays[i])
			}
		}
		commit(20)
		waitFor(t, "every record published", func() bool { return pub.count() == len(want) })
		checkOrder(t, want, pub.messages())
		if o := pub.overlapping(); len(o) > 0 {
			t.Errorf("relays published at the same time %d times: %v", len(o), o[:min(len(o), 5)])
		}
		waitFor(t, "every record marked published", func() bool { return len(pending(t, stores[0])) == 0 })
	})
}

// crashLeases makes Run's release at shutdown do nothing while crashed is set, as when the
// process dies, fails every AcquireLease while stalled is set, as when the lease table cannot be
// reached, and records when the lease was taken or renewed.
type crashLeases struct {
	relay.LeaseStore
	crashed atomic.Bool
	stalled atomic.Bool

	mu       sync.Mutex
	acquired []time.Time // now of each successful AcquireLease
}

func (c *crashLeases) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration, now time.Time) (bool, error) {
	if c.stalled.Load() {
		return false, errors.New("lease table unreachable")
	}
	ok, err := c.LeaseStore.AcquireLease(ctx, name, holder, ttl, now)
	if ok {
		c.mu.Lock()
		c.acquired = append(c.acquired, now)
		c.mu.Unlock()
	}
	return ok, err
}

func (c *crashLeases) ReleaseLease(ctx context.Context, name, holder string) error {
	if c.crashed.Load() {
		return nil
	}
	return c.LeaseStore.ReleaseLease(ctx, name, holder)
}

func (c *crashLeases) times() []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Time(nil), c.acquired...)
}

// TestTakeoverAfterCrash: a holder that stops without releasing keeps the lease until it
// expires; then the standby takes it and publishes.
func TestTakeoverAfterCrash(t *testing.T) {
	eachBackend(t, func(t *testing.T, open func(t *testing.T) Store) {
		const ttl = 300 * time.Millisecond
		s1, s2 := open(t), open(t)
		pub := newRecorder(0)
		l1 := &crashLeases{LeaseStore: s1}
		l1.crashed.Store(true)
		l2 := &crashLeases{LeaseStore: s2}
		r1 := newRelay(t, s1, l1, pub.as("r1"), relay.Options{Holder: "r1", LeaseTTL: ttl})
		stop1 := run(t, r1)
		waitFor(t, "r1 leading", r1.Leader)
		r2 := newRelay(t, s2, l2, pub.as("r2"), relay.Options{Holder: "r2", LeaseTTL: ttl})
		run(t, r2)
		stop1()
		lastRenewal := l1.times()[len(l1.times())-1]
		rec := record(t, 1, "")
		add(t, s2, rec)
		r2.Notify()
		waitFor(t, "r2 publishing", func() bool { return pub.count() == 1 })
		if !r2.Leader() {
			t.Fatal("r2 published without leading")
		}
		first := l2.times()[0]
		if !first.After(lastRenewal.Add(ttl)) {
			t.Errorf("r2 took the lease at %v, before r1's expired (%v + %v)", first, lastRenewal, ttl)
		}
	})
}

// TestReleaseOnShutdown: a relay stopping cleanly releases the lease, so the standby takes over
// long before the lease (an hour) would expire.
func TestReleaseOnShutdown(t *testing.T) {
	eachBackend(t, func(t *testing.T, open func(t *testing.T) Store) {
		s1, s2 := open(t), open(t)
		pub := newRecorder(0)
		r1 := newRelay(t, s1, nil, pub.as("r1"), relay.Options{Holder: "r1", LeaseTTL: time.Hour})
		stop1 := run(t, r1)
		waitFor(t, "r1 leading", r1.Leader)
		r2 := newRelay(t, s2, nil, pub.as("r2"), relay.Options{Holder: "r2", LeaseTTL: time.Hour})
		run(t, r2)
		stop1()
		if r1.Leader() {
			t.Error("r1 still reports leading after Run returned")
		}
		waitFor(t, "r2 leading", r2.Leader)
	})
}

// TestMetrics reads the backlog gauges, the leader gauge and the counters.
func TestMetrics(t *testing.T) {
	eachBackend(t, func(t *testing.T, open func(t *testing.T) Store) {
		s := open(t)
		reader := sdkmetric.NewManualReader()
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
		t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
		pub := newRecorder(0)
		pub.setFail(errors.New("down"))
		old := record(t, 1, "")
		add(t, s, old, record(t, 2, ""))
		// A stopped clock, a minute after the records' time.
		stopped := pending(t, s)[0].CreatedAt.Add(time.Minute)
		now := func() time.Time { return stopped }
		r := newRelay(t, s, nil, pub.as("a"), relay.Options{Meter: mp.Meter("test"), Now: now, LeaseTTL: time.Hour})
		run(t, r)
		waitFor(t, "leading", r.Leader)
		var rm metricdata.ResourceMetrics
		if err := reader.Collect(t.Context(), &rm); err != nil {
			t.Fatal(err)
		}
		if got := gauge[int64](t, rm, "nops_outbox_backlog"); got != 2 {
			t.Errorf("nops_outbox_backlog = %d, want 2", got)
		}
		if got := gauge[float64](t, rm, "nops_outbox_oldest_age_seconds"); got != 60 {
			t.Errorf("nops_outbox_oldest_age_seconds = %v, want 60", got)
		}
		if got := gauge[int64](t, rm, "nops_outbox_relay_leader"); got != 1 {
			t.Errorf("nops_outbox_relay_leader = %d, want 1", got)
		}
	})
}

func counter(t *testing.T, reader *sdkmetric.ManualReader, name string) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(t.Context(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			var total int64
			for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
				total += dp.Value
			}
			return total
		}
	}
	return 0
}

func gauge[N int64 | float64](t *testing.T, rm metricdata.ResourceMetrics, name string) N {
	t.Helper()
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				dps := m.Data.(metricdata.Gauge[N]).DataPoints
				if len(dps) != 1 {
					t.Fatalf("%s has %d points, want 1", name, len(dps))
				}
				return dps[0].Value
			}
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// purgeCounter counts what the relay purges, and when the inbox purge's cutoff was.
type purgeCounter struct {
	Store
	outbox  atomic.Int64
	mu      sync.Mutex
	cutoffs []time.Time
}

func (p *purgeCounter) PurgePublishedOutbox(ctx context.Context, before time.Time) (int64, error) {
	n, err := p.Store.PurgePublishedOutbox(ctx, before)
	p.outbox.Add(n)
	return n, err
}

func (p *purgeCounter) PurgeInbox(_ context.Context, before time.Time) (int64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cutoffs = append(p.cutoffs, before)
	return 0, nil
}

func (p *purgeCounter) inboxCutoffs() []time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]time.Time(nil), p.cutoffs...)
}

// TestPurge: the holder purges published records older than Retention, and inbox claims older
// than InboxRetention.
func TestPurge(t *testing.T) {
	eachBackend(t, func(t *testing.T, open func(t *testing.T) Store) {
		s := &purgeCounter{Store: open(t)}
		pub := newRecorder(0)
		want := []events.OutboxRecord{record(t, 1, ""), record(t, 2, ""), record(t, 3, "")}
		add(t, s, want...)
		start := time.Now()
		r := newRelay(t, s, s.Store, pub.as("a"), relay.Options{
			Retention: time.Nanosecond, PurgeInterval: 5 * time.Millisecond, Inbox: s, InboxRetention: time.Hour,
		})
		run(t, r)
		waitFor(t, "the published records purged", func() bool { return s.outbox.Load() == int64(len(want)) })
		if n := pub.count(); n != len(want) {
			t.Errorf("%d published, want %d", n, len(want))
		}
		c := s.inboxCutoffs()
		if len(c) == 0 {
			t.Fatal("the inbox was not purged")
		}
		if got, earliest := c[0], start.Add(-time.Hour); got.Before(earliest) || got.After(time.Now().Add(-time.Hour)) {
			t.Errorf("inbox purge cutoff %v, want an hour before the purge (after %v)", got, earliest)
		}
	})
}

// corruptStore hands the relay a record the bus rejects (a tenant with a dot), as a defect
// would.
type corruptStore struct {
	Store
	badID string
}

func (c *corruptStore) PendingOutbox(ctx context.Context, limit int) ([]events.OutboxRecord, error) {
	recs, err := c.Store.PendingOutbox(ctx, limit)
	for i := range recs {
		if recs[i].ID == c.badID {
			recs[i].Tenant = "bad.tenant"
		}
	}
	return recs, err
}

// TestInvalidRecordHeldBack: a record the bus rejects holds back its subject's later records,
// not the other subjects, and stays pending with its attempts counted.
func TestInvalidRecordHeldBack(t *testing.T) {
	s := sqliteOpener(t)(t)
	bad, after, other := record(t, 1, ""), record(t, 1, ""), record(t, 2, "")
	add(t, s, bad, after, other)
	cs := &corruptStore{Store: s, badID: bad.ID}
	pub := newRecorder(0)
	r := newRelay(t, cs, s, pub.as("a"), relay.Options{})
	run(t, r)
	waitFor(t, "the other subject published", func() bool { return pub.count() == 1 })
	waitFor(t, "the bad record's attempts counted", func() bool {
		p := pending(t, s)
		return len(p) == 2 && p[0].ID == bad.ID && p[0].Attempts >= 2
	})
	p := pending(t, s)
	if p[1].ID != after.ID || p[1].Attempts != 0 {
		t.Errorf("pending = %+v, want %s held back without attempts", p, after.ID)
	}
	if got := pub.messages()[0].ID; got != other.ID {
		t.Errorf("published %s, want %s", got, other.ID)
	}
}

func TestNewValidates(t *testing.T) {
	s := sqliteOpener(t)(t)
	pub := newRecorder(0).as("a")
	tests := []struct {
		name string
		opts relay.Options
	}{
		{"negative batch", relay.Options{Batch: -1}},
		{"negative ttl", relay.Options{LeaseTTL: -time.Second}},
		{"backoff max below initial", relay.Options{BackoffInitial: time.Second, BackoffMax: time.Millisecond}},
		{"long holder", relay.Options{Holder: string(make([]byte, relay.MaxLeaseHolder+1))}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := relay.New(s, s, pub, tt.opts); errs.CodeOf(err) != errs.Invalid {
				t.Fatalf("New = %v, want code %q", err, errs.Invalid)
			}
		})
	}
	if _, err := relay.New(nil, s, pub, relay.Options{}); err == nil {
		t.Error("New without a store succeeded")
	}
	r, err := relay.New(s, s, pub, relay.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Holder() == "" {
		t.Error("no default holder")
	}
	var nilRelay *relay.Relay
	nilRelay.Notify() // does nothing
}

// TestRunTwice: a second concurrent Run is refused.
func TestRunTwice(t *testing.T) {
	s := sqliteOpener(t)(t)
	r := newRelay(t, s, nil, newRecorder(0).as("a"), relay.Options{})
	run(t, r)
	waitFor(t, "leading", r.Leader)
	if err := r.Run(t.Context()); err == nil {
		t.Fatal("second Run succeeded")
	}
}

// TestHold: while Hold says so the relay publishes nothing and the records wait in the outbox
// (forced bus_down); once it stops holding, every record is published, in order.
func TestHold(t *testing.T) {
	eachBackend(t, func(t *testing.T, open func(t *testing.T) Store) {
		s := open(t)
		var held atomic.Bool
		var asked atomic.Int64
		held.Store(true)
		hold := func() bool { asked.Add(1); return held.Load() }
		want := []events.OutboxRecord{record(t, 1, ""), record(t, 2, ""), record(t, 1, "")}
		add(t, s, want...)
		pub := newRecorder(0)
		r := newRelay(t, s, nil, pub.as("a"), relay.Options{Hold: hold})
		run(t, r)
		waitFor(t, "several held rounds", func() bool { return asked.Load() >= 5 })
		if n := pub.count(); n != 0 {
			t.Fatalf("%d records published while held", n)
		}
		if n := len(pending(t, s)); n != len(want) {
			t.Fatalf("%d records pending while held, want %d", n, len(want))
		}
		held.Store(false)
		r.Notify()
		waitFor(t, "every record published", func() bool { return pub.count() == len(want) })
		checkOrder(t, want, pub.messages())
	})
}
