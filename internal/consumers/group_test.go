package consumers_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/consumers"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/events"
)

// countingStore counts the calls of the statements a group commit makes, and fails
// AddEventStats while fail is set.
type countingStore struct {
	consumers.Store
	claims, batchClaims, adds atomic.Int32
	fail                      atomic.Bool
}

func (c *countingStore) ClaimInbox(ctx context.Context, consumer, eventID string, at time.Time) (bool, error) {
	c.claims.Add(1)
	return c.Store.ClaimInbox(ctx, consumer, eventID, at)
}

func (c *countingStore) ClaimInboxBatch(ctx context.Context, consumer string, ids []string, at time.Time) ([]string, error) {
	c.batchClaims.Add(1)
	return c.Store.ClaimInboxBatch(ctx, consumer, ids, at)
}

func (c *countingStore) AddEventStats(ctx context.Context, adds []consumers.EventStatAdd) error {
	c.adds.Add(1)
	if c.fail.Load() {
		return errors.New("projection write failed")
	}
	return c.Store.AddEventStats(ctx, adds)
}

// statsBatcher is the event-stats consumer's group commit on st: each item one event.
func statsBatcher(tx consumers.TxRunner, st consumers.Store, o consumers.BatcherOptions) *consumers.GroupBatcher[consumers.EventStatAdd] {
	return consumers.NewGroupBatcher(tx, st, "event-stats-test", func(ctx context.Context, adds []consumers.EventStatAdd) error {
		return st.AddEventStats(ctx, adds)
	}, o)
}

func one(tenant, typ string, n int) consumers.EventStatAdd {
	return consumers.EventStatAdd{Tenant: tenant, Type: typ, Count: 1, LastEventAt: at.Add(time.Duration(n) * time.Second)}
}

// TestGroupCountsDuplicatesOnce: a group holding events several times, some already counted by
// an earlier group, claims them with one statement, adds them with one, and counts each distinct
// event once, with the latest time.
func TestGroupCountsDuplicatesOnce(t *testing.T) {
	eachBackend(t, func(t *testing.T, st consumers.Store) {
		cs := &countingStore{Store: st}
		h := newHeldTx(cs)
		b := statsBatcher(h, cs, consumers.BatcherOptions{})
		var calls []func() error
		for i := range 20 {
			typ := []string{"a", "b"}[i%2]
			for range 1 + i%3 { // some events twice or three times within the group
				calls = append(calls, func() error { return b.Once(t.Context(), fmt.Sprintf("evt_%02d", i), one("ten_a", typ, i)) })
			}
		}
		// The first group's event, again in the second group: counted by the first.
		calls = append(calls, func() error { return b.Once(t.Context(), "evt_first", one("ten_a", "a", 100)) })
		errs := queueBehindFirst(t, b, h, func() error { return b.Once(t.Context(), "evt_first", one("ten_a", "a", -1)) }, calls)
		for i, err := range errs {
			if err != nil {
				t.Errorf("call %d: %v", i, err)
			}
		}
		if got := h.txs.Load(); got != 2 {
			t.Errorf("%d transactions, want 2 (the first alone, then one group)", got)
		}
		if got := cs.batchClaims.Load(); got != 1 {
			t.Errorf("%d batch claims, want 1 (the group of %d)", got, len(calls))
		}
		if got := cs.adds.Load(); got != 2 {
			t.Errorf("%d AddEventStats, want 2 (one per transaction)", got)
		}
		want := []consumers.EventStat{
			{Tenant: "ten_a", Type: "a", Count: 11, LastEventAt: at.Add(18 * time.Second)},
			{Tenant: "ten_a", Type: "b", Count: 10, LastEventAt: at.Add(19 * time.Second)},
		}
		if diff := cmp.Diff(want, stats(t, st, "ten_a")); diff != "" {
			t.Errorf("EventStats (-want +got):\n%s", diff)
		}
		// Delivered again, in another group: nothing more is counted.
		var wg sync.WaitGroup
		for i := range 20 {
			wg.Go(func() {
				if err := b.Once(t.Context(), fmt.Sprintf("evt_%02d", i), one("ten_a", "a", 1000)); err != nil {
					t.Errorf("again %d: %v", i, err)
				}
			})
		}
		wg.Wait()
		if diff := cmp.Diff(want, stats(t, st, "ten_a")); diff != "" {
			t.Errorf("EventStats after redeliveries (-want +got):\n%s", diff)
		}
	})
}

// TestGroupFailureCountsNothing: a group whose effect fails rolls back its claims and counts, so
// the retries one by one count each event once; when those fail too, nothing is counted and a
// later delivery counts the events.
func TestGroupFailureCountsNothing(t *testing.T) {
	eachBackend(t, func(t *testing.T, st consumers.Store) {
		cs := &countingStore{Store: st}
		h := newHeldTx(cs)
		b := statsBatcher(h, cs, consumers.BatcherOptions{})
		cs.fail.Store(true)
		var calls []func() error
		for i := range 5 {
			calls = append(calls, func() error { return b.Once(t.Context(), fmt.Sprintf("evt_%d", i), one("ten_a", "a", i)) })
		}
		errs := queueBehindFirst(t, b, h, func() error { return b.Once(t.Context(), "evt_first", one("ten_a", "a", 0)) }, calls)
		for i, err := range errs {
			if err == nil {
				t.Errorf("call %d succeeded with a failing effect", i)
			}
		}
		if got := stats(t, st, ""); len(got) != 0 {
			t.Fatalf("EventStats after failed groups = %+v, want none", got)
		}
		// Each call applied alone once (the fallback) plus the first and the group's attempt.
		if got := cs.adds.Load(); got != 1+1+5 {
			t.Errorf("AddEventStats ran %d times, want 7", got)
		}
		cs.fail.Store(false)
		var wg sync.WaitGroup
		for i := range 5 {
			wg.Go(func() {
				if err := b.Once(t.Context(), fmt.Sprintf("evt_%d", i), one("ten_a", "a", i)); err != nil {
					t.Errorf("redelivery %d: %v", i, err)
				}
			})
		}
		wg.Wait()
		if got := stats(t, st, "ten_a"); len(got) != 1 || got[0].Count != 5 {
			t.Fatalf("EventStats after redeliveries = %+v, want 5", got)
		}
	})
}

// failFirstGroup fails the first AddEventStats that adds more than one event: a group's.
type failFirstGroup struct {
	consumers.Store
	failed atomic.Bool
}

func (f *failFirstGroup) AddEventStats(ctx context.Context, adds []consumers.EventStatAdd) error {
	var n int64
	for _, a := range adds {
		n += a.Count
	}
	if n > 1 && f.failed.CompareAndSwap(false, true) {
		return errors.New("group write failed")
	}
	return f.Store.AddEventStats(ctx, adds)
}

// TestGroupFailureRetriedOneByOne: after a group's transaction failed, its events are counted
// one by one, once each: the group's claims were rolled back with its counts.
func TestGroupFailureRetriedOneByOne(t *testing.T) {
	eachBackend(t, func(t *testing.T, st consumers.Store) {
		fs := &failFirstGroup{Store: st}
		h := newHeldTx(fs)
		b := statsBatcher(h, fs, consumers.BatcherOptions{})
		var calls []func() error
		for i := range 8 {
			calls = append(calls, func() error { return b.Once(t.Context(), fmt.Sprintf("evt_%d", i), one("ten_a", "a", i)) })
		}
		for i, err := range queueBehindFirst(t, b, h, func() error { return b.Once(t.Context(), "evt_first", one("ten_a", "a", 0)) }, calls) {
			if err != nil {
				t.Errorf("call %d: %v", i, err)
			}
		}
		if !fs.failed.Load() {
			t.Fatal("no group was written")
		}
		if got := stats(t, st, "ten_a"); len(got) != 1 || got[0].Count != 9 {
			t.Fatalf("EventStats = %+v, want 9 events once each", got)
		}
	})
}

// TestEventStatsReplicasCountOnce runs two event-stats handlers, as two kernel replicas do, each
// with many deliveries at once, on the same events in different orders: on PostgreSQL their group
// transactions run concurrently and claim overlapping events; every event is counted once.
func TestEventStatsReplicasCountOnce(t *testing.T) {
	eachBackend(t, func(t *testing.T, st consumers.Store) {
		const n = 60
		ds := make([]bus.Delivery, n)
		for i := range ds {
			ds[i] = delivery(t, "ten_a", i)
		}
		replicas := []bus.Handler{consumers.EventStatsHandler(st), consumers.EventStatsHandler(st)}
		var wg sync.WaitGroup
		start := make(chan struct{})
		for r, h := range replicas {
			order := slices.Clone(ds)
			if r == 1 {
				slices.Reverse(order)
			}
			for round := range 2 {
				for _, d := range order {
					wg.Go(func() {
						<-start
						d.Attempt = round + 1
						if err := h(t.Context(), d); err != nil {
							t.Errorf("replica %d, %s: %v", r, d.ID, err)
						}
					})
				}
			}
		}
		close(start)
		wg.Wait()
		want := []consumers.EventStat{{Tenant: "ten_a", Type: string(events.TypeAgentHeartbeat), Count: n, LastEventAt: at.Add((n - 1) * time.Second)}}
		if diff := cmp.Diff(want, stats(t, st, "")); diff != "" {
			t.Errorf("EventStats (-want +got):\n%s", diff)
		}
	})
}

// TestClaimInboxBatch: the adapters claim a list of events in one statement with ClaimInbox's
// rules: new claims are returned, existing ones and repeats are not, invalid input claims
// nothing, and a rolled-back transaction takes its claims with it.
func TestClaimInboxBatch(t *testing.T) {
	eachBackend(t, func(t *testing.T, st consumers.Store) {
		ctx := t.Context()
		if ok, err := st.ClaimInbox(ctx, "c", "evt_b", at); err != nil || !ok {
			t.Fatalf("ClaimInbox = %v, %v", ok, err)
		}
		got, err := st.ClaimInboxBatch(ctx, "c", []string{"evt_a", "evt_b", "evt_c", "evt_a"}, at)
		if err != nil {
			t.Fatalf("ClaimInboxBatch: %v", err)
		}
		slices.Sort(got)
		if diff := cmp.Diff([]string{"evt_a", "evt_c"}, got); diff != "" {
			t.Errorf("claimed (-want +got):\n%s", diff)
		}
		if got, err := st.ClaimInboxBatch(ctx, "other", []string{"evt_a"}, at); err != nil || len(got) != 1 {
			t.Errorf("another consumer's claim = %v, %v", got, err)
		}
		if _, err := st.ClaimInboxBatch(ctx, "c", []string{"evt_d", ""}, at); errs.CodeOf(err) != errs.Invalid {
			t.Errorf("an empty id: %v, want invalid", err)
		}
		boom := errors.New("boom")
		err = st.InTx(ctx, func(ctx context.Context) error {
			if got, err := st.ClaimInboxBatch(ctx, "c", []string{"evt_d", "evt_e"}, at); err != nil || len(got) != 2 {
				t.Errorf("in a transaction: %v, %v", got, err)
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("InTx = %v", err)
		}
		got, err = st.ClaimInboxBatch(ctx, "c", []string{"evt_e", "evt_d"}, at)
		slices.Sort(got)
		if err != nil || !slices.Equal(got, []string{"evt_d", "evt_e"}) {
			t.Errorf("after a rollback and an invalid call: %v, %v (want evt_d and evt_e new)", got, err)
		}
		if got, err := st.ClaimInboxBatch(ctx, "c", nil, at); err != nil || len(got) != 0 {
			t.Errorf("no ids: %v, %v", got, err)
		}
	})
}

// TestAddEventStats: additions of one row are summed, with the latest time, and an invalid one
// adds nothing.
func TestAddEventStats(t *testing.T) {
	eachBackend(t, func(t *testing.T, st consumers.Store) {
		ctx := t.Context()
		adds := []consumers.EventStatAdd{
			{Tenant: "ten_b", Type: "t", Count: 2, LastEventAt: at},
			{Tenant: "ten_a", Type: "t", Count: 3, LastEventAt: at.Add(time.Second)},
			{Tenant: "ten_b", Type: "t", Count: 4, LastEventAt: at.Add(-time.Second)},
		}
		if err := st.AddEventStats(ctx, adds); err != nil {
			t.Fatalf("AddEventStats: %v", err)
		}
		if err := st.AddEventStats(ctx, []consumers.EventStatAdd{{Tenant: "ten_a", Type: "t", Count: 1, LastEventAt: at}}); err != nil {
			t.Fatalf("AddEventStats: %v", err)
		}
		bad := [][]consumers.EventStatAdd{
			{{Tenant: "ten_a", Type: "t", Count: 1, LastEventAt: at}, {Tenant: "ten.a", Type: "t", Count: 1, LastEventAt: at}},
			{{Tenant: "ten_a", Type: "t", Count: 0, LastEventAt: at}},
			{{Tenant: "ten_a", Type: "", Count: 1, LastEventAt: at}},
			{{Tenant: "ten_a", Type: "t", Count: 1}},
		}
		for _, b := range bad {
			if err := st.AddEventStats(ctx, b); errs.CodeOf(err) != errs.Invalid {
				t.Errorf("AddEventStats(%+v) = %v, want invalid", b, err)
			}
		}
		want := []consumers.EventStat{
			{Tenant: "ten_a", Type: "t", Count: 4, LastEventAt: at.Add(time.Second).Truncate(time.Microsecond)},
			{Tenant: "ten_b", Type: "t", Count: 6, LastEventAt: at.Truncate(time.Microsecond)},
		}
		if diff := cmp.Diff(want, stats(t, st, "")); diff != "" {
			t.Errorf("EventStats (-want +got):\n%s", diff)
		}
	})
}

// TestBatchSizeMetric: every group committed records its size.
func TestBatchSizeMetric(t *testing.T) {
	eachBackend(t, func(t *testing.T, st consumers.Store) {
		reader := sdkmetric.NewManualReader()
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
		h := newHeldTx(st)
		b := statsBatcher(h, st, consumers.BatcherOptions{Meter: mp.Meter("test")})
		var calls []func() error
		for i := range 7 {
			calls = append(calls, func() error { return b.Once(t.Context(), fmt.Sprintf("evt_%d", i), one("ten_a", "a", i)) })
		}
		queueBehindFirst(t, b, h, func() error { return b.Once(t.Context(), "evt_first", one("ten_a", "a", 0)) }, calls)
		var rm metricdata.ResourceMetrics
		if err := reader.Collect(t.Context(), &rm); err != nil {
			t.Fatal(err)
		}
		var found bool
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				if m.Name != consumers.BatchSizeMetric {
					continue
				}
				found = true
				pts := m.Data.(metricdata.Histogram[int64]).DataPoints
				if len(pts) != 1 || pts[0].Count != 2 || pts[0].Sum != 8 {
					t.Fatalf("%s points = %+v, want 2 groups of 8 events", m.Name, pts)
				}
				if v, _ := pts[0].Attributes.Value("consumer"); v.AsString() != "event-stats-test" {
					t.Errorf("consumer attribute = %q", v.AsString())
				}
			}
		}
		if !found {
			t.Fatalf("no %s recorded", consumers.BatchSizeMetric)
		}
	})
}

// memInbox is an inbox and transaction runner in memory, which never blocks: the scheduling
// test below needs a commit that does not yield its thread (SQLite's file writes may).
type memInbox struct {
	mu      sync.Mutex
	claimed map[string]bool
	txs     int
}

func (m *memInbox) InTx(ctx context.Context, fn func(ctx context.Context) error) error {
	m.mu.Lock()
	m.txs++
	m.mu.Unlock()
	return fn(ctx)
}

func (m *memInbox) ClaimInbox(_ context.Context, _, id string, _ time.Time) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.claimed[id] {
		return false, nil
	}
	m.claimed[id] = true
	return true, nil
}

func (m *memInbox) ClaimInboxBatch(ctx context.Context, consumer string, ids []string, at time.Time) ([]string, error) {
	var out []string
	for _, id := range ids {
		if ok, _ := m.ClaimInbox(ctx, consumer, id, at); ok {
			out = append(out, id)
		}
	}
	return out, nil
}

func (m *memInbox) PurgeInbox(context.Context, time.Time) (int64, error) { return 0, nil }

// TestGroupTakesTheBurst: applications that become ready together (the bus hands a batch of
// messages to many handlers) share one transaction, rather than the first committing alone and
// the rest in a second. On one thread the goroutines of a burst run one after the other, so
// without the new leader yielding once before it takes its group, each would commit alone.
func TestGroupTakesTheBurst(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	m := &memInbox{claimed: map[string]bool{}}
	var applied atomic.Int32
	b := consumers.NewGroupBatcher(m, m, "burst-test", func(_ context.Context, items []int) error {
		applied.Add(int32(len(items)))
		return nil
	}, consumers.BatcherOptions{})
	const n = 32
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if err := b.Once(context.Background(), fmt.Sprintf("evt_%02d", i), i); err != nil {
				t.Errorf("Once: %v", err)
			}
		})
	}
	wg.Wait()
	if applied.Load() != n {
		t.Fatalf("%d applied, want %d", applied.Load(), n)
	}
	// One transaction, or two when the scheduler ran the leader again early (it checks its
	// global queue now and then, and -race randomises the order of the ready goroutines).
	if m.txs > 2 {
		t.Errorf("a burst of %d applications took %d transactions, want 1 or 2", n, m.txs)
	}
}
