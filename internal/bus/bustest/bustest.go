// Package bustest is the conformance suite of the event bus: every bus.Bus adapter (natsbus,
// redisbus) runs the same Run from its own tests, so retry, dead-letter, redelivery, replay and
// consumer-group semantics are the same whichever broker runs underneath.
//
// # Usage
//
// An adapter's test passes an Opener that opens its bus on a namespace, and the Features it has:
//
//	func TestConformance(t *testing.T) {
//		bustest.Run(t, func(t *testing.T, ns string) bus.Bus {
//			b, err := natsbus.Open(ctx, natsbus.Config{Namespace: ns, StoreDir: dirFor(t, ns)})
//			...
//			return b
//		}, bustest.Features{Persistent: true, DedupWindow: 2 * time.Minute})
//	}
//
// The batch cases (bus.BatchSubscriber) run on adapters that implement it.
//
// Every case runs in its own subtest on its own namespace (Namespace), in parallel with the
// others, so an adapter's Opener must allow many buses open at once on different namespaces. The
// suite never has two buses open on one namespace at the same time: a case that needs two
// members of a consumer group subscribes twice on one bus.
//
// # Timing
//
// The suite waits on conditions with a deadline (polling), never sleeps to synchronise and
// asserts no upper bound on latency. The only timing assertions are lower bounds a correct
// adapter always meets (a RetryAfter delay is not cut short; Stop does not return while a
// handler runs).
//
// Only tests import bustest.
package bustest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/nops-kernel/nops/internal/bus"
)

// Opener opens a bus on namespace. Opening the same namespace again after Close must see the
// same stored data (events, consumer positions, dead letters) when Features.Persistent. The
// suite closes every bus it opens (through t.Cleanup); an Opener may register its own cleanup
// too, since Close is idempotent. The Opener fails the test (t.Fatal) when it cannot open.
type Opener func(t *testing.T, namespace string) bus.Bus

// Features describes what an adapter offers; cases that need a missing feature are skipped.
type Features struct {
	// Persistent: data and consumer positions survive Close and reopening the namespace.
	Persistent bool
	// DedupWindow is the adapter's configured broker dedup window. The suite assumes it is at
	// least 5 s (its dedup cases finish well within that).
	DedupWindow time.Duration
}

// minDedupWindow is the shortest dedup window the suite's dedup cases fit in.
const minDedupWindow = 5 * time.Second

// Run runs the conformance suite against the adapter that open opens.
func Run(t *testing.T, open Opener, f Features) {
	if f.DedupWindow < minDedupWindow {
		t.Fatalf("bustest: Features.DedupWindow is %s; the suite needs at least %s", f.DedupWindow, minDedupWindow)
	}
	s := &suite{open: open, f: f}
	cases := []struct {
		name string
		fn   func(*testing.T, *suite)
	}{
		{"publish and subscribe", testPublishSubscribe},
		{"order of one publish", testOrder},
		{"broker dedup", testBrokerDedup},
		{"consumer groups", testConsumerGroups},
		{"filters", testFilters},
		{"filter update", testFilterUpdate},
		{"deliver new", testDeliverNew},
		{"large payload", testLargePayload},
		{"invalid publish", testInvalidPublish},
		{"invalid subscribe", testInvalidSubscribe},
		{"retry then success", testRetryThenSuccess},
		{"retries exhausted go to the DLQ", testRetriesExhausted},
		{"terminal error", testTerminal},
		{"retry after delay", testRetryAfter},
		{"panic is a failed attempt", testPanic},
		{"on dead letter hook", testOnDeadLetter},
		{"dlq filters", testDLQFilters},
		{"dlq pagination", testDLQPagination},
		{"dlq invalid list", testDLQInvalidList},
		{"dlq remove and count", testDLQRemoveAndCount},
		{"dlq add dedup", testDLQAddDedup},
		{"reprocessing", testReprocessing},
		{"redeliver goes to one consumer", testRedeliverOneConsumer},
		{"invalid redeliver", testInvalidRedeliver},
		{"replay", testReplay},
		{"consumer stats", testConsumerStats},
		{"consumer stats count only matching messages", testConsumerStatsFiltered},
		{"stop settles the running handler", testStop},
		{"crash recovery", testCrashRecovery},
		{"persistence", testPersistence},
		{"concurrency", testConcurrency},
		{"close", testClose},
		{"batch: a burst in batches", testBatchBurst},
		{"batch: settled per delivery", testBatchPerDelivery},
		{"batch: panic fails its batch", testBatchPanic},
		{"batch: beyond max deliveries", testBatchMaxDeliveries},
		{"batch: stop settles the running batch", testBatchStop},
		{"batch: invalid subscribe", testBatchInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.fn(t, s)
		})
	}
}

// Namespace returns a namespace no other test uses: "t" followed by 12 hex characters, a valid
// bus token. Adapters' own tests may use it too.
func Namespace(t testing.TB) string {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("bustest: random namespace: %v", err)
	}
	return "t" + hex.EncodeToString(b)
}

// Names shared by the cases; every case has its own namespace, so they never collide.
const (
	tenantA = "ten_a"
	tenantB = "ten_b"
	typeA   = "nops.test.alpha.v1"
	typeB   = "nops.test.beta.v1"

	traceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

	// waitTimeout bounds every wait for a condition: generous, since only a broken adapter
	// reaches it, and a loaded CI machine running every adapter at once must not.
	waitTimeout = 45 * time.Second
	// pollEvery is how often conditions are checked.
	pollEvery = 5 * time.Millisecond
	// stopTimeout bounds Stop and Close in cleanups.
	stopTimeout = 30 * time.Second
	// ackWait is the AckWait of the cases that do not exercise it: short enough for a test,
	// long enough that no fault-free delivery on a loaded machine exceeds it (which would be a
	// redelivery the case does not expect).
	ackWait = 3 * time.Second
	// shortAckWait is the AckWait of the cases that wait for it to expire.
	shortAckWait = time.Second
)

// fastBackoff keeps retries fast.
var fastBackoff = bus.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond}

type suite struct {
	open Opener
	f    Features
}

// env is one case's bus on its own namespace.
type env struct {
	s     *suite
	ns    string
	b     bus.Bus
	start time.Time // before anything was published
}

// newEnv opens a bus on a fresh namespace, closed when the test ends.
func (s *suite) newEnv(t *testing.T) *env {
	t.Helper()
	ns := Namespace(t)
	e := &env{s: s, ns: ns, start: time.Now()}
	e.b = s.openBus(t, ns)
	return e
}

// openBus opens ns and registers its Close.
func (s *suite) openBus(t *testing.T, ns string) bus.Bus {
	t.Helper()
	b := s.open(t, ns)
	if b == nil {
		t.Fatalf("bustest: Opener returned a nil bus for namespace %s", ns)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close(%s): %v", ns, err)
		}
	})
	return b
}

// id returns a message id unique to this case.
func (e *env) id(label string) string { return e.ns + "-" + label }

// msg returns a valid message of tenant and type typ with id e.id(label).
func (e *env) msg(tenant, typ, label string) bus.Message {
	id := e.id(label)
	// A CloudEvent, with non-ASCII text and a newline so that byte-identical delivery means
	// something.
	payload := fmt.Sprintf("{\"specversion\":\"1.0\",\"id\":%q,\"source\":\"/bustest\",\"type\":%q,\n\"tenant\":%q,\"data\":{\"text\":\"héllo ☃\"}}", id, typ, tenant)
	return bus.Message{ID: id, Tenant: tenant, Type: typ, TraceParent: traceParent, Payload: []byte(payload)}
}

// msgs returns n messages of tenant and type typ labelled prefix-0 … prefix-(n-1).
func (e *env) msgs(tenant, typ, prefix string, n int) []bus.Message {
	out := make([]bus.Message, n)
	for i := range out {
		out[i] = e.msg(tenant, typ, fmt.Sprintf("%s-%d", prefix, i))
	}
	return out
}

// publish publishes msgs in one call and fails the test on error.
func (e *env) publish(t *testing.T, msgs ...bus.Message) {
	t.Helper()
	if err := e.b.Publish(t.Context(), msgs...); err != nil {
		t.Fatalf("Publish(%d messages): %v", len(msgs), err)
	}
}

// subscribe subscribes h with cfg on e's bus; see subscribeOn.
func (e *env) subscribe(t *testing.T, cfg bus.ConsumerConfig, h bus.Handler) bus.Subscription {
	t.Helper()
	return subscribeOn(t, e.b, cfg, h)
}

// subscribeOn subscribes h with cfg on b and stops the subscription when the test ends (before
// the bus is closed, since cleanups run last-registered first).
func subscribeOn(t *testing.T, b bus.Bus, cfg bus.ConsumerConfig, h bus.Handler) bus.Subscription {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	sub, err := b.Subscribe(ctx, cfg, h)
	if err != nil {
		cancel()
		t.Fatalf("Subscribe(%s): %v", cfg.Name, err)
	}
	t.Cleanup(func() {
		defer cancel()
		sctx, scancel := context.WithTimeout(context.Background(), stopTimeout)
		defer scancel()
		if err := sub.Stop(sctx); err != nil {
			t.Errorf("Stop(%s): %v", cfg.Name, err)
		}
	})
	return sub
}

// stop stops sub now and fails the test when it cannot.
func stop(t *testing.T, sub bus.Subscription) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	if err := sub.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
}

// consumer returns the consumer configuration of the cases: fast retries, 5 deliveries.
func consumer(name string) bus.ConsumerConfig {
	return bus.ConsumerConfig{Name: name, MaxDeliveries: 5, Backoff: fastBackoff, AckWait: ackWait, Concurrency: 1}
}

// eventually polls cond until it holds, failing the test after waitTimeout with what (and the
// last state describe reports, when not nil).
func eventually(t *testing.T, what string, cond func() bool, describe func() string) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			state := ""
			if describe != nil {
				state = ": " + describe()
			}
			t.Fatalf("timed out after %s waiting for %s%s", waitTimeout, what, state)
		}
		select {
		case <-t.Context().Done():
			t.Fatalf("test ended while waiting for %s", what)
		case <-time.After(pollEvery):
		}
	}
}

// recorder records what a handler was handed, for the cases to wait on and inspect.
type recorder struct {
	mu    sync.Mutex
	all   []bus.Delivery
	calls map[string]int // per message id
}

func newRecorder() *recorder { return &recorder{calls: map[string]int{}} }

// handler records each delivery and then returns next's result (nil when next is nil). next
// gets the number of this call for the delivery's message id (1 for the first).
func (r *recorder) handler(next func(ctx context.Context, d bus.Delivery, call int) error) bus.Handler {
	return func(ctx context.Context, d bus.Delivery) error {
		call := r.add(d)
		if next == nil {
			return nil
		}
		return next(ctx, d, call)
	}
}

func (r *recorder) add(d bus.Delivery) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	d.Payload = slices.Clone(d.Payload)
	r.all = append(r.all, d)
	r.calls[d.ID]++
	return r.calls[d.ID]
}

// count is how many times message id was handed over.
func (r *recorder) count(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls[id]
}

// of returns the deliveries of message id in the order they were handed over.
func (r *recorder) of(id string) []bus.Delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []bus.Delivery
	for _, d := range r.all {
		if d.ID == id {
			out = append(out, d)
		}
	}
	return out
}

// ids returns the message ids in the order they were handed over.
func (r *recorder) ids() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, len(r.all))
	for i, d := range r.all {
		out[i] = d.ID
	}
	return out
}

// attempts returns the Attempt of each delivery of message id.
func (r *recorder) attempts(id string) []int {
	var out []int
	for _, d := range r.of(id) {
		out = append(out, d.Attempt)
	}
	return out
}

// waitAll waits until every message of ids was handed over at least once.
func (r *recorder) waitAll(t *testing.T, what string, ids ...string) {
	t.Helper()
	eventually(t, what, func() bool {
		for _, id := range ids {
			if r.count(id) == 0 {
				return false
			}
		}
		return true
	}, func() string {
		var missing []string
		for _, id := range ids {
			if r.count(id) == 0 {
				missing = append(missing, id)
			}
		}
		return fmt.Sprintf("%d of %d not delivered (first missing %s)", len(missing), len(ids), first(missing))
	})
}

// waitCalls waits until message id was handed over at least n times.
func (r *recorder) waitCalls(t *testing.T, id string, n int) {
	t.Helper()
	eventually(t, fmt.Sprintf("%d deliveries of %s", n, id), func() bool { return r.count(id) >= n },
		func() string { return fmt.Sprintf("%d so far, attempts %v", r.count(id), r.attempts(id)) })
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

// sentinel publishes a fresh message of tenant and type typ and waits until every recorder in
// recs received it. A case publishes one after the messages it checks, so that whatever the
// consumers were going to do with those (by stream order) has been done before the case counts
// deliveries.
func (e *env) sentinel(t *testing.T, tenant, typ string, recs ...*recorder) {
	t.Helper()
	m := e.msg(tenant, typ, "sentinel-"+Namespace(t))
	e.publish(t, m)
	for _, r := range recs {
		r.waitAll(t, "the sentinel message", m.ID)
	}
}

// settled waits until consumer has nothing pending and nothing unacknowledged: no redelivery of
// anything can come afterwards.
func (e *env) settled(t *testing.T, consumer string) {
	t.Helper()
	var last bus.ConsumerStats
	var lastErr error
	eventually(t, "consumer "+consumer+" to settle everything", func() bool {
		last, lastErr = e.b.ConsumerStats(t.Context(), consumer)
		return lastErr == nil && last.Pending == 0 && last.AckPending == 0
	}, func() string { return fmt.Sprintf("stats %+v, error %v", last, lastErr) })
}

// waitDLQCount waits until CountDeadLetters(tenant) is n.
func (e *env) waitDLQCount(t *testing.T, tenant string, n int64) {
	t.Helper()
	var last int64
	var lastErr error
	eventually(t, fmt.Sprintf("%d dead letters of tenant %q", n, tenant), func() bool {
		last, lastErr = e.b.CountDeadLetters(t.Context(), tenant)
		return lastErr == nil && last == n
	}, func() string { return fmt.Sprintf("count %d, error %v", last, lastErr) })
}

// listAll lists every dead letter matching f, page by page (limit per page), checking the
// pages' shape on the way.
func (e *env) listAll(t *testing.T, f bus.DLQFilter, limit int) []bus.DeadLetter {
	t.Helper()
	var out []bus.DeadLetter
	cursor := ""
	for page := 0; ; page++ {
		if page > 1000 {
			t.Fatalf("ListDeadLetters: more than 1000 pages; the cursor does not advance (%q)", cursor)
		}
		dls, next, err := e.b.ListDeadLetters(t.Context(), f, cursor, limit)
		if err != nil {
			t.Fatalf("ListDeadLetters(%+v, %q, %d): %v", f, cursor, limit, err)
		}
		if len(dls) > limit {
			t.Fatalf("ListDeadLetters returned %d entries with limit %d", len(dls), limit)
		}
		out = append(out, dls...)
		if next == "" {
			return out
		}
		if len(dls) == 0 {
			t.Fatalf("ListDeadLetters returned an empty page with a next cursor %q", next)
		}
		if next == cursor {
			t.Fatalf("ListDeadLetters returned the same cursor %q again", next)
		}
		cursor = next
	}
}

// checkStoredAt checks that a broker timestamp is set, in UTC and plausible.
func (e *env) checkStoredAt(t *testing.T, what string, at time.Time) {
	t.Helper()
	switch {
	case at.IsZero():
		t.Errorf("%s: time not set", what)
	case at.Location() != time.UTC:
		t.Errorf("%s: %s is not in UTC", what, at)
	case at.Before(e.start.Add(-time.Minute)) || at.After(time.Now().Add(time.Minute)):
		t.Errorf("%s: %s is not around the time of the test (%s)", what, at, e.start.UTC())
	}
}

// msgOpts compare messages.
var msgOpts = []cmp.Option{cmpopts.EquateEmpty()}

// dlOpts compare dead letters up to the adapter's Position and the precision of its clock.
var dlOpts = []cmp.Option{
	cmpopts.EquateEmpty(),
	cmpopts.IgnoreFields(bus.DeadLetter{}, "Position"),
	cmpopts.EquateApproxTime(time.Millisecond),
}

// errStop is what the cases' Replay callbacks return to stop early.
var errStop = errors.New("bustest: stop here")
