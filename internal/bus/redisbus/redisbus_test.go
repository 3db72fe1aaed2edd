package redisbus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

// deliveries records what a handler was handed.
type deliveries struct {
	mu  sync.Mutex
	all []bus.Delivery
	at  []time.Time
}

func (r *deliveries) add(d bus.Delivery) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.all = append(r.all, d)
	r.at = append(r.at, time.Now())
	n := 0
	for _, x := range r.all {
		if x.ID == d.ID {
			n++
		}
	}
	return n
}

func (r *deliveries) attempts(id string) []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int
	for _, d := range r.all {
		if d.ID == id {
			out = append(out, d.Attempt)
		}
	}
	return out
}

func (r *deliveries) count(id string) int { return len(r.attempts(id)) }

// TestStalledConsumerRecovered: an entry read under the group by a consumer that never
// acknowledges it (a crashed process) is claimed with XAUTOCLAIM after AckWait and handed to a
// live subscription as attempt 2.
func TestStalledConsumerRecovered(t *testing.T) {
	b, c := testBus(t, func(c *Config) { c.ClaimInterval = 20 * time.Millisecond })
	ctx := ctxT(t)
	if err := c.XGroupCreateMkStream(ctx, b.keys.events(), "worker", "0").Err(); err != nil {
		t.Fatalf("XGROUP CREATE: %v", err)
	}
	m := msg("stalled-1")
	if err := b.Publish(ctx, m); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	got, err := c.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group: "worker", Consumer: "ghost", Streams: []string{b.keys.events(), ">"}, Count: 1, Block: -1,
	}).Result()
	if err != nil || len(got) != 1 || len(got[0].Messages) != 1 {
		t.Fatalf("raw XREADGROUP = %v, %v; want the entry", got, err)
	}
	entry := got[0].Messages[0].ID

	rec := &deliveries{}
	subscribe(t, b, bus.ConsumerConfig{Name: "worker", AckWait: 300 * time.Millisecond}, func(_ context.Context, d bus.Delivery) error {
		rec.add(d)
		return nil
	})
	eventually(t, "the stalled entry to be handed over", func() bool { return rec.count(m.ID) > 0 })
	if got := rec.attempts(m.ID); !slices.Equal(got, []int{2}) {
		t.Errorf("attempts %v, want [2]", got)
	}
	rec.mu.Lock()
	pos := rec.all[0].Position
	rec.mu.Unlock()
	if want := "events/" + entry; pos != want {
		t.Errorf("Position = %q, want %q", pos, want)
	}
	eventually(t, "nothing pending in the group", func() bool {
		p, err := c.XPending(ctx, b.keys.events(), "worker").Result()
		return err == nil && p.Count == 0
	})
}

// TestDelayedRetryIsNotClaimedEarly: a retry delayed beyond AckWait stays pending in the group,
// but the periodic XAUTOCLAIM leaves it alone (it is in the delay set): it comes back once, at
// its due time, as attempt 2.
func TestDelayedRetryIsNotClaimedEarly(t *testing.T) {
	b, _ := testBus(t, func(c *Config) { c.ClaimInterval = 10 * time.Millisecond })
	const delay = 800 * time.Millisecond
	m := msg("delayed-1")
	rec := &deliveries{}
	subscribe(t, b, bus.ConsumerConfig{Name: "patient", AckWait: 100 * time.Millisecond}, func(_ context.Context, d bus.Delivery) error {
		if rec.add(d) == 1 {
			return bus.RetryAfter(errors.New("later"), delay)
		}
		return nil
	})
	if err := b.Publish(ctxT(t), m); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	eventually(t, "the retry", func() bool { return rec.count(m.ID) >= 2 })
	sentinel := msg("delayed-sentinel")
	if err := b.Publish(ctxT(t), sentinel); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	eventually(t, "the sentinel", func() bool { return rec.count(sentinel.ID) == 1 })
	eventually(t, "nothing pending", func() bool {
		st, err := b.ConsumerStats(ctxT(t), "patient")
		return err == nil && st == bus.ConsumerStats{}
	})
	if got := rec.attempts(m.ID); !slices.Equal(got, []int{1, 2}) {
		t.Fatalf("attempts %v, want [1 2]", got)
	}
	rec.mu.Lock()
	waited := rec.at[1].Sub(rec.at[0])
	rec.mu.Unlock()
	if waited < delay {
		t.Errorf("retried after %s, before the %s asked for", waited, delay)
	}
}

// TestTrimming: each publish trims the stream by length (MaxLen) and by age (Retention), both
// approximately (whole stream nodes).
func TestTrimming(t *testing.T) {
	publish := func(t *testing.T, b *Bus, prefix string, n int) {
		t.Helper()
		for i := 0; i < n; i += 50 {
			var batch []bus.Message
			for j := i; j < min(i+50, n); j++ {
				batch = append(batch, msg(fmt.Sprintf("%s-%d", prefix, j)))
			}
			if err := b.Publish(ctxT(t), batch...); err != nil {
				t.Fatalf("Publish: %v", err)
			}
		}
	}
	t.Run("max length", func(t *testing.T) {
		const maxLen = 100
		b, c := testBus(t, func(c *Config) { c.MaxLen = maxLen })
		publish(t, b, "len", 1000)
		n, err := c.XLen(ctxT(t), b.keys.events()).Result()
		if err != nil {
			t.Fatalf("XLEN: %v", err)
		}
		// Approximate trimming keeps at least MaxLen and at most about a node (100 entries by
		// default) more.
		if n < maxLen || n > 3*maxLen {
			t.Errorf("after 1000 publishes with MaxLen %d the stream holds %d entries", maxLen, n)
		}
		t.Logf("MaxLen %d: %d entries after 1000 publishes", maxLen, n)
	})
	t.Run("retention", func(t *testing.T) {
		b, c := testBus(t, func(c *Config) { c.Retention = time.Millisecond })
		publish(t, b, "old", 300)
		last := time.Now()
		eventually(t, "the clock to move on", func() bool { return time.Since(last) > 5*time.Millisecond })
		publish(t, b, "new", 1)
		n, err := c.XLen(ctxT(t), b.keys.events()).Result()
		if err != nil {
			t.Fatalf("XLEN: %v", err)
		}
		// Everything but the node the new entry joined is older than the retention.
		if n >= 301 || n < 1 {
			t.Errorf("after 300 old and 1 new publishes with a 1ms retention the stream holds %d entries", n)
		}
		t.Logf("Retention 1ms: %d entries left of 301", n)
	})
}

// TestDedupWindow: a message id published again within the window is not stored again; after
// the window it is. Redeliver dedups per consumer.
func TestDedupWindow(t *testing.T) {
	b, c := testBus(t, func(c *Config) { c.DedupWindow = 300 * time.Millisecond })
	ctx := ctxT(t)
	m := msg("dedup-1")
	xlen := func(key string) int64 {
		t.Helper()
		n, err := c.XLen(ctx, key).Result()
		if err != nil {
			t.Fatalf("XLEN %s: %v", key, err)
		}
		return n
	}
	for range 3 {
		if err := b.Publish(ctx, m); err != nil {
			t.Fatalf("Publish: %v", err)
		}
	}
	if n := xlen(b.keys.events()); n != 1 {
		t.Fatalf("after 3 publishes of one id within the window the stream holds %d entries, want 1", n)
	}
	eventually(t, "the dedup marker to expire", func() bool { return c.Exists(ctx, b.keys.dedup(m.ID)).Val() == 0 })
	if err := b.Publish(ctx, m); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if n := xlen(b.keys.events()); n != 2 {
		t.Errorf("after the window the stream holds %d entries, want 2", n)
	}

	for _, consumer := range []string{"a", "b", "a"} {
		if err := b.Redeliver(ctx, consumer, m, "key-1"); err != nil {
			t.Fatalf("Redeliver(%s): %v", consumer, err)
		}
	}
	if na, nb := xlen(b.keys.retry("a")), xlen(b.keys.retry("b")); na != 1 || nb != 1 {
		t.Errorf("retry streams hold a=%d b=%d entries, want 1 each", na, nb)
	}
	for _, tc := range []struct {
		consumer, key string
	}{{"a.b", "k"}, {"a", ""}, {"a", strings.Repeat("k", maxDedupKey+1)}} {
		if err := b.Redeliver(ctx, tc.consumer, m, tc.key); !errs.Is(err, errs.Invalid) {
			t.Errorf("Redeliver(%q, key of %d bytes) = %v, want invalid", tc.consumer, len(tc.key), err)
		}
	}
}

// TestMinReplicas: with MinReplicas set, a publish that fewer replicas confirm fails (the
// message is stored all the same, and publishing it again is deduplicated).
func TestMinReplicas(t *testing.T) {
	b, c := testBus(t, func(c *Config) { c.MinReplicas = 1; c.ReplicaTimeout = 50 * time.Millisecond })
	info, err := c.Info(ctxT(t), "replication").Result()
	if err != nil {
		t.Fatalf("INFO replication: %v", err)
	}
	if v := infoField(info, "connected_slaves"); v != "0" {
		t.Skipf("the test Redis has replicas (connected_slaves:%s)", v)
	}
	err = b.Publish(ctxT(t), msg("wait-1"))
	if !errs.Is(err, errs.Unavailable) || !strings.Contains(err.Error(), "0 of 1 replicas") {
		t.Fatalf("Publish without replicas = %v, want unavailable naming 0 of 1 replicas", err)
	}
	if n := c.XLen(ctxT(t), b.keys.events()).Val(); n != 1 {
		t.Errorf("the stream holds %d entries, want 1", n)
	}
}

func TestOpenValidates(t *testing.T) {
	c := client(t, services.RedisURL(t))
	cluster := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}})
	t.Cleanup(func() { cluster.Close() })
	cases := map[string]Config{
		"no client":            {},
		"namespace with colon": {Client: c, Namespace: "a:b"},
		"negative max pending": {Client: c, MaxPending: -1},
		"negative retention":   {Client: c, Retention: -time.Second},
		"wait on a cluster":    {Client: cluster, MinReplicas: 1},
	}
	for name, cfg := range cases {
		if b, err := Open(ctxT(t), cfg); err == nil {
			b.Close()
			t.Errorf("%s: Open succeeded", name)
		}
	}
}

// TestPingWrongKeyType: a key of another type where the event stream belongs makes the bus
// unready.
func TestPingWrongKeyType(t *testing.T) {
	b, c := testBus(t, nil)
	if err := b.Ping(ctxT(t)); err != nil {
		t.Fatalf("Ping before anything exists: %v", err)
	}
	if err := c.Set(ctxT(t), b.keys.events(), "oops", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	if err := b.Ping(ctxT(t)); !errs.Is(err, errs.Unavailable) {
		t.Errorf("Ping with a string at the stream's key = %v, want unavailable", err)
	}
}

// TestFailedPublishLeavesNoMarker: when XADD fails inside the publish script (here the stream's
// key holds a string), the message's dedup marker is removed again, so publishing it once the
// key is fixed stores it; the messages of the batch before the failure are stored once.
func TestFailedPublishLeavesNoMarker(t *testing.T) {
	b, c := testBus(t, nil)
	ctx := ctxT(t)
	if err := c.Set(ctx, b.keys.events(), "oops", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	m := msg("fail-1")
	if err := b.Publish(ctx, m); !errs.Is(err, errs.Unavailable) {
		t.Fatalf("Publish onto a string key = %v, want unavailable", err)
	}
	if n := c.Exists(ctx, b.keys.dedup(m.ID)).Val(); n != 0 {
		t.Errorf("the failed publish left its dedup marker")
	}
	if err := c.Del(ctx, b.keys.events()).Err(); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if err := b.Publish(ctx, m, msg("fail-2")); err != nil {
		t.Fatalf("Publish after the key was fixed: %v", err)
	}
	if err := b.Publish(ctx, m, msg("fail-2")); err != nil {
		t.Fatalf("Publish again: %v", err)
	}
	if n := c.XLen(ctx, b.keys.events()).Val(); n != 2 {
		t.Errorf("the stream holds %d entries, want 2", n)
	}
}

// TestTraceParentStoredOnlyWhenSet: an empty traceparent is not stored as a field; a set one is,
// and both read back as published.
func TestTraceParentStoredOnlyWhenSet(t *testing.T) {
	b, c := testBus(t, nil)
	ctx := ctxT(t)
	plain, traced := msg("tp-0"), msg("tp-1")
	traced.TraceParent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	if err := b.Publish(ctx, plain, traced); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	entries, err := c.XRange(ctx, b.keys.events(), "-", "+").Result()
	if err != nil || len(entries) != 2 {
		t.Fatalf("XRANGE = %d entries, %v; want 2", len(entries), err)
	}
	if _, ok := entries[0].Values["tp"]; ok {
		t.Errorf("the entry without a traceparent has a tp field: %v", entries[0].Values)
	}
	for i, want := range []bus.Message{plain, traced} {
		got, _, err := decodeMessage(entries[i].ID, entries[i].Values)
		if err != nil {
			t.Fatalf("decode entry %d: %v", i, err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("entry %d (-published +read):\n%s", i, diff)
		}
	}
}

// TestStopRemovesConsumer: a stopped subscription with nothing pending leaves no consumer in the
// group; a subscription whose ctx ends stops by itself.
func TestStopRemovesConsumer(t *testing.T) {
	b, c := testBus(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rec := &deliveries{}
	sub, err := b.Subscribe(ctx, bus.ConsumerConfig{Name: "short"}, func(_ context.Context, d bus.Delivery) error {
		rec.add(d)
		return nil
	})
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	s := sub.(*subscription)
	consumers := func() []string {
		list, err := c.XInfoConsumers(ctxT(t), b.keys.events(), "short").Result()
		if err != nil {
			t.Fatalf("XINFO CONSUMERS: %v", err)
		}
		var names []string
		for _, x := range list {
			names = append(names, x.Name)
		}
		return names
	}
	// Redis creates a group's consumer when it first reads or claims an entry.
	if err := b.Publish(ctxT(t), msg("short-1")); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	eventually(t, "the message", func() bool { return rec.count("short-1") == 1 })
	if got := consumers(); !slices.Contains(got, s.consumer) {
		t.Fatalf("consumers = %v, want %s among them", got, s.consumer)
	}
	cancel()
	select {
	case <-s.finished:
	case <-time.After(30 * time.Second):
		t.Fatalf("the subscription did not stop when its ctx ended")
	}
	if got := consumers(); slices.Contains(got, s.consumer) {
		t.Errorf("consumers after Stop = %v, still holding %s", got, s.consumer)
	}
	if err := sub.Stop(ctxT(t)); err != nil {
		t.Errorf("Stop after stopping: %v", err)
	}
}

// TestFilteredEntriesAcknowledged: entries a consumer's filter skips are acknowledged at once
// and never reach the handler.
func TestFilteredEntriesAcknowledged(t *testing.T) {
	b, c := testBus(t, nil)
	rec := &deliveries{}
	subscribe(t, b, bus.ConsumerConfig{Name: "picky", Filter: bus.Filter{Tenants: []string{"ten_b"}}}, func(_ context.Context, d bus.Delivery) error {
		rec.add(d)
		return nil
	})
	skipped := msg("other-tenant")
	wanted := msg("mine")
	wanted.Tenant = "ten_b"
	if err := b.Publish(ctxT(t), skipped, wanted); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	eventually(t, "the wanted message", func() bool { return rec.count(wanted.ID) == 1 })
	eventually(t, "nothing pending", func() bool {
		p, err := c.XPending(ctxT(t), b.keys.events(), "picky").Result()
		return err == nil && p.Count == 0
	})
	if rec.count(skipped.ID) != 0 {
		t.Errorf("the handler was handed a message its filter skips")
	}
}

// TestConsumerStatsScansBacklog: a filtered consumer's lag is counted entry by entry across
// several scan chunks.
func TestConsumerStatsScansBacklog(t *testing.T) {
	b, _ := testBus(t, nil)
	sub := subscribe(t, b, bus.ConsumerConfig{Name: "half", Filter: bus.Filter{Tenants: []string{"ten_b"}}},
		func(context.Context, bus.Delivery) error { return nil })
	if err := sub.Stop(ctxT(t)); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	const n = 2*lagScanChunk + 10
	var batch []bus.Message
	for i := range n {
		m := msg(fmt.Sprintf("lag-%d", i))
		if i%2 == 0 {
			m.Tenant = "ten_b"
		}
		batch = append(batch, m)
	}
	if err := b.Publish(ctxT(t), batch...); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	st, err := b.ConsumerStats(ctxT(t), "half")
	if err != nil {
		t.Fatalf("ConsumerStats: %v", err)
	}
	if want := (bus.ConsumerStats{Pending: n / 2}); st != want {
		t.Errorf("ConsumerStats = %+v, want %+v", st, want)
	}
	if _, err := b.ConsumerStats(ctxT(t), "a.b"); !errs.Is(err, errs.Invalid) {
		t.Errorf("ConsumerStats of an invalid name = %v, want invalid", err)
	}
}

// TestDLQTenantNamedLikeAKey: a tenant may be called anything a token allows, "tenants"
// included, without clashing with the bus's own keys; the cross-tenant cursor walks tenants in
// order.
func TestDLQTenantNamedLikeAKey(t *testing.T) {
	b, _ := testBus(t, nil)
	ctx := ctxT(t)
	var added []string
	for i, tenant := range []string{"tenants", "a", "tenants", "zz", "a"} {
		m := msg(fmt.Sprintf("dl-%d", i))
		m.Tenant = tenant
		dl := bus.DeadLetter{ID: bus.DeadLetterID("c", m.ID), Message: m, Consumer: "c", Reason: "r", Attempts: 1,
			StoredAt: time.Now().UTC(), FailedAt: time.Now().UTC(), Source: fmt.Sprint(i)}
		if err := b.AddDeadLetter(ctx, dl); err != nil {
			t.Fatalf("AddDeadLetter: %v", err)
		}
		added = append(added, m.ID)
	}
	var got []string
	cursor := ""
	for {
		page, next, err := b.ListDeadLetters(ctx, bus.DLQFilter{}, cursor, 2)
		if err != nil {
			t.Fatalf("ListDeadLetters: %v", err)
		}
		for _, dl := range page {
			got = append(got, dl.Message.Tenant+":"+dl.Message.ID)
		}
		if next == "" {
			break
		}
		cursor = next
	}
	want := []string{"a:dl-1", "a:dl-4", "tenants:dl-0", "tenants:dl-2", "zz:dl-3"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("listing across tenants (-want +got):\n%s", diff)
	}
	if n, err := b.CountDeadLetters(ctx, ""); err != nil || n != int64(len(added)) {
		t.Errorf("CountDeadLetters = %d, %v; want %d", n, err, len(added))
	}
	if _, _, err := b.ListDeadLetters(ctx, bus.DLQFilter{Tenant: "a"}, "tenants/1-0", 2); !errs.Is(err, errs.Invalid) {
		t.Errorf("a cursor of another tenant = %v, want invalid", err)
	}
	if err := b.RemoveDeadLetters(ctx, []bus.DeadLetter{{Position: "nonsense"}}); !errs.Is(err, errs.Invalid) {
		t.Errorf("RemoveDeadLetters of a malformed position = %v, want invalid", err)
	}
}

func TestStoredTime(t *testing.T) {
	at := func(us int64) time.Time { return time.UnixMicro(us).UTC() }
	cases := []struct {
		id, ts string
		want   time.Time
	}{
		{"1700000000123-0", "1700000000123456", at(1700000000123456)},
		{"1700000000123-4", "", at(1700000000123000)},
		{"1700000000123-0", "garbage", at(1700000000123000)},
		{"1700000000123-0", "1700000000122999", at(1700000000123000)}, // TIME before the id's ms
		{"1700000000123-0", "1700000000124001", at(1700000000123999)}, // clock stepped back
	}
	for _, c := range cases {
		if got := storedTime(c.id, c.ts); !got.Equal(c.want) || got.Location() != time.UTC {
			t.Errorf("storedTime(%s, %s) = %s, want %s UTC", c.id, c.ts, got, c.want)
		}
	}
}

// TestStreamsDeletedWhileSubscribed: when the streams vanish under a running subscription (a
// Redis restarted without persistence, an operator's DEL), the subscription recreates its
// consumer groups and goes on with what is published next.
func TestStreamsDeletedWhileSubscribed(t *testing.T) {
	b, c := testBus(t, nil)
	rec := &deliveries{}
	subscribe(t, b, bus.ConsumerConfig{Name: "phoenix"}, func(_ context.Context, d bus.Delivery) error {
		rec.add(d)
		return nil
	})
	if err := b.Publish(ctxT(t), msg("before")); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	eventually(t, "the first message", func() bool { return rec.count("before") == 1 })
	if err := c.Del(ctxT(t), b.keys.events(), b.keys.retry("phoenix"), b.keys.consumer("phoenix")).Err(); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	// Publish until one arrives: the subscription notices the loss on its next read.
	eventually(t, "a message after the streams were deleted", func() bool {
		if err := b.Publish(ctxT(t), msg(fmt.Sprintf("after-%d", time.Now().UnixNano()))); err != nil {
			t.Fatalf("Publish: %v", err)
		}
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return len(rec.all) > 1
	})
	if _, err := b.ConsumerStats(ctxT(t), "phoenix"); err != nil {
		t.Errorf("ConsumerStats after the groups were recreated: %v", err)
	}
}
