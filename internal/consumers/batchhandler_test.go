package consumers_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/consumers"
	"github.com/nops-kernel/nops/internal/events"
)

// TestEventStatsBatchCountsOnce hands batches holding one event several times, and then the
// same batches again, as redeliveries do: each distinct event is counted once, and every
// delivery succeeds.
func TestEventStatsBatchCountsOnce(t *testing.T) {
	eachBackend(t, func(t *testing.T, st consumers.Store) {
		h := consumers.EventStatsBatchHandler(st)
		a1, a3, b2 := delivery(t, "ten_a", 1), delivery(t, "ten_a", 3), delivery(t, "ten_b", 2)
		batch := []bus.Delivery{a1, a3, a1, b2, a3}
		for attempt := 1; attempt <= 2; attempt++ {
			for i := range batch {
				batch[i].Attempt = attempt
			}
			for i, err := range h(t.Context(), batch) {
				if err != nil {
					t.Fatalf("attempt %d, delivery %d: %v", attempt, i, err)
				}
			}
		}
		want := []consumers.EventStat{
			{Tenant: "ten_a", Type: string(events.TypeAgentHeartbeat), Count: 2, LastEventAt: at.Add(3 * time.Second)},
			{Tenant: "ten_b", Type: string(events.TypeAgentHeartbeat), Count: 1, LastEventAt: at.Add(2 * time.Second)},
		}
		if diff := cmp.Diff(want, stats(t, st, "")); diff != "" {
			t.Errorf("EventStats (-want +got):\n%s", diff)
		}
	})
}

// TestEventStatsBatchMalformedFailsAlone: a malformed delivery of a batch is a terminal error
// for itself; the others of the batch are counted.
func TestEventStatsBatchMalformedFailsAlone(t *testing.T) {
	eachBackend(t, func(t *testing.T, st consumers.Store) {
		h := consumers.EventStatsBatchHandler(st)
		bad := delivery(t, "ten_a", 9)
		bad.Payload = []byte("not json")
		got := h(t.Context(), []bus.Delivery{delivery(t, "ten_a", 1), bad, delivery(t, "ten_a", 2)})
		if len(got) != 3 || got[0] != nil || !bus.IsTerminal(got[1]) || got[2] != nil {
			t.Fatalf("results %v, want nil, a terminal error, nil", got)
		}
		if s := stats(t, st, "ten_a"); len(s) != 1 || s[0].Count != 2 {
			t.Fatalf("EventStats = %+v, want the 2 good events", s)
		}
	})
}

// failOnStore fails AddEventStats whenever an addition is for tenant: a group holding an event
// of it fails, and so does that event on its own.
type failOnStore struct {
	consumers.Store
	tenant string
	mu     sync.Mutex
	calls  []int // the events of each call
}

func (f *failOnStore) AddEventStats(ctx context.Context, adds []consumers.EventStatAdd) error {
	n := 0
	fail := false
	for _, a := range adds {
		n += int(a.Count)
		fail = fail || a.Tenant == f.tenant
	}
	f.mu.Lock()
	f.calls = append(f.calls, n)
	f.mu.Unlock()
	if fail {
		return errors.New("projection write failed")
	}
	return f.Store.AddEventStats(ctx, adds)
}

// TestEventStatsBatchStoreFailureFailsAlone: when the batch's transaction fails, its events are
// counted one by one: the one the store refuses fails with a retryable error and is not claimed
// (its redelivery counts it), the others are counted once.
func TestEventStatsBatchStoreFailureFailsAlone(t *testing.T) {
	eachBackend(t, func(t *testing.T, st consumers.Store) {
		fs := &failOnStore{Store: st, tenant: "ten_bad"}
		h := consumers.EventStatsBatchHandler(fs)
		batch := []bus.Delivery{delivery(t, "ten_a", 1), delivery(t, "ten_bad", 2), delivery(t, "ten_a", 3)}
		got := h(t.Context(), batch)
		if len(got) != 3 || got[0] != nil || got[1] == nil || bus.IsTerminal(got[1]) || got[2] != nil {
			t.Fatalf("results %v, want nil, a retryable error, nil", got)
		}
		if diff := cmp.Diff([]int{3, 1, 1, 1}, fs.calls); diff != "" {
			t.Errorf("AddEventStats calls, events per call (-want +got):\n%s", diff)
		}
		fs.tenant = "" // the store recovers: the redelivery counts the failed event, once
		if got := h(t.Context(), batch); slices.ContainsFunc(got, func(err error) bool { return err != nil }) {
			t.Fatalf("redelivery: %v", got)
		}
		want := []consumers.EventStat{
			{Tenant: "ten_a", Type: string(events.TypeAgentHeartbeat), Count: 2, LastEventAt: at.Add(3 * time.Second)},
			{Tenant: "ten_bad", Type: string(events.TypeAgentHeartbeat), Count: 1, LastEventAt: at.Add(2 * time.Second)},
		}
		if diff := cmp.Diff(want, stats(t, st, "")); diff != "" {
			t.Errorf("EventStats (-want +got):\n%s", diff)
		}
	})
}

// TestEventStatsBatchReplicasCountOnce runs batch handlers of two replicas concurrently on
// overlapping batches of the same events in different orders (on PostgreSQL their transactions
// claim overlapping ids at once): every event is counted once.
func TestEventStatsBatchReplicasCountOnce(t *testing.T) {
	eachBackend(t, func(t *testing.T, st consumers.Store) {
		const n = 120
		ds := make([]bus.Delivery, n)
		for i := range ds {
			ds[i] = delivery(t, "ten_a", i)
		}
		replicas := []bus.BatchHandler{consumers.EventStatsBatchHandler(st), consumers.EventStatsBatchHandler(st)}
		var wg sync.WaitGroup
		start := make(chan struct{})
		for r, h := range replicas {
			order := slices.Clone(ds)
			if r == 1 {
				slices.Reverse(order)
			}
			for batch := range slices.Chunk(order, 40) {
				for range 2 {
					wg.Go(func() {
						<-start
						for i, err := range h(t.Context(), batch) {
							if err != nil {
								t.Errorf("replica %d, %s: %v", r, batch[i].ID, err)
							}
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
