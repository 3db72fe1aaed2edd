package relay_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/bus/natsbus"
	"github.com/nops-kernel/nops/internal/consumers"
	"github.com/nops-kernel/nops/internal/events"
	"github.com/nops-kernel/nops/internal/relay"
	"github.com/nops-kernel/nops/internal/testutil/embeddedbus"
)

// openBus starts an embedded JetStream in a temporary directory, in a namespace of its own.
func openBus(t *testing.T) *natsbus.Bus { return embeddedbus.Open(t, "relay_") }

// collector subscribes to every event and keeps the deliveries by message id, in delivery order.
type collector struct {
	mu    sync.Mutex
	order []string       // ids, first delivery of each
	count map[string]int // deliveries per id
}

func collect(t *testing.T, b bus.Bus, name string) *collector {
	t.Helper()
	c := &collector{count: map[string]int{}}
	sub, err := b.Subscribe(t.Context(), bus.ConsumerConfig{Name: name}, func(_ context.Context, d bus.Delivery) error {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.count[d.ID] == 0 {
			c.order = append(c.order, d.ID)
		}
		c.count[d.ID]++
		return nil
	})
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	t.Cleanup(func() { _ = sub.Stop(context.Background()) })
	return c
}

func (c *collector) distinct() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.order)
}

func (c *collector) messages() []bus.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]bus.Message, len(c.order))
	for i, id := range c.order {
		out[i] = bus.Message{ID: id}
	}
	return out
}

// TestNATSTwoRelays runs two relays on one database publishing to a real embedded JetStream,
// with the leader stopped cleanly and as by a crash while records are committed: every record
// reaches a consumer, each subject in order, and the event-stats consumer counts each once.
func TestNATSTwoRelays(t *testing.T) {
	eachBackend(t, func(t *testing.T, open func(t *testing.T) Store) {
		b := openBus(t)
		seen := collect(t, b, "collector")
		stores := []Store{open(t), open(t)}
		st, ok := stores[0].(consumers.Store)
		if !ok {
			t.Fatalf("%T is not a consumers.Store", stores[0])
		}
		for _, spec := range consumers.Kernel(st, consumers.Options{AckWait: 5 * time.Second}) {
			sub, err := spec.Subscribe(t.Context(), b)
			if err != nil {
				t.Fatalf("Subscribe %s: %v", spec.Config.Name, err)
			}
			t.Cleanup(func() { _ = sub.Stop(context.Background()) })
		}

		const ttl = time.Second
		relays := make([]*relay.Relay, 2)
		stops := make([]func(), 2)
		leases := make([]*crashLeases, 2)
		for i := range relays {
			leases[i] = &crashLeases{LeaseStore: stores[i]}
			relays[i] = newRelay(t, stores[i], leases[i], b, relay.Options{Holder: fmt.Sprintf("relay-%d", i), Batch: 10, LeaseTTL: ttl})
			stops[i] = run(t, relays[i])
		}
		var want []events.OutboxRecord
		commit := func(n int) {
			t.Helper()
			var rs []events.OutboxRecord
			for range n {
				rs = append(rs, record(t, len(want)%7, ""))
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
		commit(50)
		for _, crash := range []bool{false, true} {
			waitFor(t, "a leader", func() bool { return leader() >= 0 })
			i := leader()
			commit(30)
			leases[i].crashed.Store(crash)
			stops[i]()
			commit(30)
			waitFor(t, "the other relay taking over", relays[1-i].Leader)
			leases[i].crashed.Store(false)
			stops[i] = run(t, relays[i])
		}
		commit(50)
		waitFor(t, "every record consumed", func() bool { return seen.distinct() == len(want) })
		checkOrder(t, want, seen.messages())
		waitFor(t, "every record counted", func() bool {
			stats, err := st.EventStats(t.Context(), "")
			return err == nil && len(stats) == 1 && stats[0].Count == int64(len(want))
		})
		waitFor(t, "every record marked published", func() bool { return len(pending(t, stores[0])) == 0 })
	})
}

// TestNATSRecovers: records committed while the bus is closed stay pending with their attempts
// counted, and are published, in order, by a relay on a bus that works again.
func TestNATSRecovers(t *testing.T) {
	s := sqliteOpener(t)(t)
	dead := openBus(t)
	if err := dead.Close(); err != nil {
		t.Fatal(err)
	}
	want := []events.OutboxRecord{record(t, 1, traceparent), record(t, 2, ""), record(t, 1, "")}
	add(t, s, want...)
	r := newRelay(t, s, nil, dead, relay.Options{Holder: "r"})
	stop := run(t, r)
	waitFor(t, "failed attempts", func() bool {
		p := pending(t, s)
		return len(p) == len(want) && p[0].Attempts >= 2
	})
	stop()

	b := openBus(t)
	seen := collect(t, b, "collector")
	run(t, newRelay(t, s, nil, b, relay.Options{Holder: "r"}))
	waitFor(t, "every record consumed", func() bool { return seen.distinct() == len(want) })
	checkOrder(t, want, seen.messages())
	var stored []bus.Stored
	_, err := b.Replay(t.Context(), time.Now().Add(-time.Hour), time.Now().Add(time.Hour), bus.Filter{}, func(m bus.Stored) error {
		stored = append(stored, m)
		return nil
	})
	if err != nil {
		t.Fatalf("Replay: %v", err)
	}
	if len(stored) != len(want) {
		t.Fatalf("the stream holds %d messages, want %d", len(stored), len(want))
	}
	if stored[0].TraceParent != traceparent || stored[1].TraceParent != "" {
		t.Errorf("traceparents %q, %q; want %q, none", stored[0].TraceParent, stored[1].TraceParent, traceparent)
	}
}
