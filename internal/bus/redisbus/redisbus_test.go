package redisbus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
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

// TestDedupWindow: a message id published again within the window is not stored again; from
// twice the window on it is (the dedup buckets remember an id for at least the window and less
// than twice it). Times are the Redis server's, whose clock the buckets follow.
// Redeliver dedups per consumer.
func TestDedupWindow(t *testing.T) {
	const window = 300 * time.Millisecond
	b, c := testBus(t, func(c *Config) { c.DedupWindow = window })
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
	serverNow := func() time.Time {
		t.Helper()
		now, err := c.Time(ctx).Result()
		if err != nil {
			t.Fatalf("TIME: %v", err)
		}
		return now
	}
	before := serverNow()
	if err := b.Publish(ctx, m); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	stored := serverNow()
	// Every publish that ended less than the window after the first one began was within the
	// window: deduplicated. Later ones prove nothing either way; stop there.
	republished := 0
	for {
		if err := b.Publish(ctx, m); err != nil {
			t.Fatalf("Publish: %v", err)
		}
		if serverNow().Sub(before) >= window {
			break
		}
		republished++
		if n := xlen(b.keys.events()); n != 1 {
			t.Fatalf("after %d publishes of one id within the window the stream holds %d entries, want 1", republished+1, n)
		}
	}
	t.Logf("%d publishes within the window deduplicated", republished)
	eventually(t, "twice the window to pass", func() bool { return serverNow().Sub(stored) >= 2*window })
	n0 := xlen(b.keys.events())
	if err := b.Publish(ctx, m); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if n := xlen(b.keys.events()); n != n0+1 {
		t.Errorf("two windows later the stream holds %d entries, want %d", n, n0+1)
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
	if dedupMarked(t, c, b.keys.dedup(), m.ID) {
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

// dedupMarked reports whether a dedup bucket whose key starts with prefix holds key.
func dedupMarked(t *testing.T, c redis.UniversalClient, prefix, key string) bool {
	t.Helper()
	iter := c.Scan(ctxT(t), 0, prefix+"*", 100).Iterator()
	for iter.Next(ctxT(t)) {
		ok, err := c.SIsMember(ctxT(t), iter.Val(), key).Result()
		if err != nil {
			t.Fatalf("SISMEMBER %s: %v", iter.Val(), err)
		}
		if ok {
			return true
		}
	}
	if err := iter.Err(); err != nil {
		t.Fatalf("SCAN %s*: %v", prefix, err)
	}
	return false
}

// TestPublishScriptBuckets runs one publish transaction with a bucket width so large (10^12 ms)
// that the server's time is in bucket 1 until the year 2286, so the buckets around it can be laid
// out beforehand: keys in the current bucket and the one before it are duplicates, keys in an
// older one are not and that bucket is deleted; new keys go to the current bucket, which expires
// three widths after its start; a key repeated within a batch is stored once; the dedup key, not
// the id, decides. The entries of the duplicates, added and removed in the same transaction, leave
// no trace for a consumer group: its lag is 0 once it read the rest.
func TestPublishScriptBuckets(t *testing.T) {
	b, c := testBus(t, nil)
	ctx := ctxT(t)
	const width = int64(1e12)
	prefix := b.keys.dedup()
	for bucket, id := range map[int]string{1: "in-now", 0: "in-prev", -1: "in-old"} {
		key := prefix + strconv.Itoa(bucket)
		if err := c.SAdd(ctx, key, id).Err(); err != nil {
			t.Fatalf("SADD %s: %v", key, err)
		}
	}
	stream := b.keys.events()
	if err := c.XGroupCreateMkStream(ctx, stream, "g", "0").Err(); err != nil {
		t.Fatalf("XGROUP CREATE: %v", err)
	}
	var batch []item
	for _, m := range []struct{ dedupKey, id string }{
		{"in-now", "in-now"}, {"in-prev", "in-prev"}, {"in-old", "in-old"}, {"new-1", "new-1"}, {"new-1", "new-1"},
		{"in-now", "other-id"}, {"k-1", "in-now"}, {"in-prev", "last"},
	} {
		batch = append(batch, item{dedupKey: m.dedupKey, msg: msg(m.id)})
	}
	got, err := b.storeBatch(ctx, stream, prefix, width, batch)
	if err != nil {
		t.Fatalf("publish transaction: %v", err)
	}
	if want := []int64{0, 0, 1, 1, 0, 0, 1, 0}; !slices.Equal(got, want) {
		t.Errorf("stored = %v, want %v", got, want)
	}
	// A batch of new keys only (the common path), after it.
	if got, err := b.storeBatch(ctx, stream, prefix, width, []item{{"new-2", msg("new-2")}, {"new-3", msg("new-3")}}); err != nil || !slices.Equal(got, []int64{1, 1}) {
		t.Errorf("second batch stored %v, %v; want [1 1]", got, err)
	}
	entries, err := c.XRange(ctx, stream, "-", "+").Result()
	if err != nil {
		t.Fatalf("XRANGE: %v", err)
	}
	var ids []string
	for _, e := range entries {
		m, _, err := decodeMessage(e.ID, e.Values)
		if err != nil {
			t.Fatalf("decode %s: %v", e.ID, err)
		}
		ids = append(ids, m.ID)
	}
	if want := []string{"in-old", "new-1", "in-now", "new-2", "new-3"}; !slices.Equal(ids, want) {
		t.Errorf("stream ids = %v, want %v", ids, want)
	}
	if n := c.Exists(ctx, prefix+"-1").Val(); n != 0 {
		t.Errorf("bucket -1 (no longer read) still exists")
	}
	members, err := c.SMembers(ctx, prefix+"1").Result()
	if err != nil {
		t.Fatalf("SMEMBERS: %v", err)
	}
	slices.Sort(members)
	if want := []string{"in-now", "in-old", "k-1", "new-1", "new-2", "new-3"}; !slices.Equal(members, want) {
		t.Errorf("current bucket = %v, want %v", members, want)
	}
	ttl, err := c.PTTL(ctx, prefix+"1").Result()
	if err != nil {
		t.Fatalf("PTTL: %v", err)
	}
	now, err := c.Time(ctx).Result()
	if err != nil {
		t.Fatalf("TIME: %v", err)
	}
	// PEXPIRETIME would say it exactly, but needs Redis 7; the bus supports 6.2.
	if want := time.UnixMilli(4 * width).Sub(now); (ttl - want).Abs() > time.Minute {
		t.Errorf("current bucket expires in %v, want about %v (three widths after its start)", ttl, want)
	}
	if !b.lagReported {
		return
	}
	read, err := c.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "c", Streams: []string{stream, ">"}, Count: 100, Block: -1}).Result()
	if err != nil || len(read) != 1 || len(read[0].Messages) != len(entries) {
		t.Fatalf("XREADGROUP = %v, %v; want the %d entries", read, err, len(entries))
	}
	groups, err := c.XInfoGroups(ctx, stream).Result()
	if err != nil || len(groups) != 1 {
		t.Fatalf("XINFO GROUPS = %v, %v", groups, err)
	}
	if g := groups[0]; g.Lag != 0 || g.EntriesRead != int64(len(entries)) {
		t.Errorf("after reading every entry the group has lag %d and %d entries read, want 0 and %d: the removed duplicates count", g.Lag, g.EntriesRead, len(entries))
	}
}

// TestPublishScriptChecksTheBatch: the publish script marks nothing when the stream does not end
// with the batch's last message (its XADDs did not store), and when a dedup bucket cannot be
// read or written it removes the batch's entries before failing: no entry without its dedup key,
// no dedup key without its entry.
func TestPublishScriptChecksTheBatch(t *testing.T) {
	b, c := testBus(t, nil)
	ctx := ctxT(t)
	stream, prefix := b.keys.events(), b.keys.dedup()
	if err := b.Publish(ctx, msg("before")); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	args := []any{prefix, bucketWidth(DefaultDedupWindow), DefaultRetention.Milliseconds(), DefaultMaxLen, "not-added", "not-added"}
	if err := publishScript.Run(ctx, c, []string{stream}, args...).Err(); err == nil {
		t.Errorf("the script accepted a stream that does not end with the batch")
	}
	if dedupMarked(t, c, prefix, "not-added") {
		t.Errorf("the script marked a message whose XADD did not store")
	}

	info0, err := c.XInfoStream(ctx, stream).Result()
	if err != nil {
		t.Fatalf("XINFO STREAM: %v", err)
	}
	// Every bucket a publish might read (now and the one before) holds a string.
	width := bucketWidth(DefaultDedupWindow)
	now, err := c.Time(ctx).Result()
	if err != nil {
		t.Fatalf("TIME: %v", err)
	}
	bucket := now.UnixMilli() / width
	var bad []string
	for _, n := range []int64{bucket - 1, bucket, bucket + 1} {
		key := prefix + strconv.FormatInt(n, 10)
		if err := c.Del(ctx, key).Err(); err != nil {
			t.Fatalf("DEL %s: %v", key, err)
		}
		if err := c.Set(ctx, key, "oops", 0).Err(); err != nil {
			t.Fatalf("SET %s: %v", key, err)
		}
		bad = append(bad, key)
	}
	if err := b.Publish(ctx, msg("bad-1"), msg("bad-2")); !errs.Is(err, errs.Unavailable) {
		t.Fatalf("Publish with a string at the bucket's key = %v, want unavailable", err)
	}
	info, err := c.XInfoStream(ctx, stream).Result()
	if err != nil {
		t.Fatalf("XINFO STREAM: %v", err)
	}
	if info.Length != 1 || info.LastEntry.ID != info0.LastEntry.ID {
		t.Errorf("after a failed publish the stream holds %d entries ending with %s, want 1 ending with %s", info.Length, info.LastEntry.ID, info0.LastEntry.ID)
	}
	// 0-1 stands for none (0-0), which XSETID cannot set back (see publishScript).
	if deleted := strings.Replace(info.MaxDeletedEntryID, "0-1", "0-0", 1); b.lagReported && (info.EntriesAdded != info0.EntriesAdded || deleted != info0.MaxDeletedEntryID) {
		t.Errorf("after a failed publish the stream counts %d entries added, greatest deleted %s; want %d and %s as before",
			info.EntriesAdded, info.MaxDeletedEntryID, info0.EntriesAdded, info0.MaxDeletedEntryID)
	}
	if err := c.Del(ctx, bad...).Err(); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if err := b.Publish(ctx, msg("bad-1"), msg("bad-2")); err != nil {
		t.Fatalf("Publish once the buckets are fixed: %v", err)
	}
	if n := c.XLen(ctx, stream).Val(); n != 3 {
		t.Errorf("the stream holds %d entries, want 3", n)
	}
}

// TestEntryFormat: an entry has two fields, meta ("\n<tenant>\n<type>\n<traceparent>\n<id>":
// an empty first line, where earlier versions wrote the server's time in µs) and data, and reads
// back as published, traceparent or not and whatever the id holds, stored at its entry id's
// millisecond. Entries in the format of earlier versions (a field each, tp only when
// set) still decode, are delivered and are counted by a filtered consumer's lag.
func TestEntryFormat(t *testing.T) {
	b, c := testBus(t, nil)
	ctx := ctxT(t)
	plain, traced := msg("tp-0"), msg("tp-1\nwith a newline")
	traced.TraceParent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	before, err := c.Time(ctx).Result()
	if err != nil {
		t.Fatalf("TIME: %v", err)
	}
	if err := b.Publish(ctx, plain, traced); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	entries, err := c.XRange(ctx, b.keys.events(), "-", "+").Result()
	if err != nil || len(entries) != 2 {
		t.Fatalf("XRANGE = %d entries, %v; want 2", len(entries), err)
	}
	for i, want := range []bus.Message{plain, traced} {
		e := entries[i]
		meta, _ := e.Values["meta"].(string)
		if len(e.Values) != 2 || e.Values["data"] != string(want.Payload) || meta != "\n"+encodeMeta(want) {
			t.Errorf("entry %d = %q, want meta \"\\n%s\" and data", i, e.Values, encodeMeta(want))
		}
		got, storedAt, err := decodeMessage(e.ID, e.Values)
		if err != nil {
			t.Fatalf("decode entry %d: %v", i, err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("entry %d (-published +read):\n%s", i, diff)
		}
		if !storedAt.Equal(entryTime(e.ID)) || storedAt.Before(before.Truncate(time.Millisecond)) {
			t.Errorf("entry %d stored at %s, want its entry id's millisecond %s, the server's time of the publish (after %s)", i, storedAt, entryTime(e.ID), before)
		}
	}

	legacy := msg("legacy-1")
	legacy.TraceParent = traced.TraceParent
	legacyID, err := c.XAdd(ctx, &redis.XAddArgs{Stream: b.keys.events(), Values: []any{
		"id", legacy.ID, "tenant", legacy.Tenant, "type", legacy.Type, "tp", legacy.TraceParent, "ts", "1", "data", legacy.Payload,
	}}).Result()
	if err != nil {
		t.Fatalf("XADD a legacy entry: %v", err)
	}
	other := msg("other-type")
	other.Type = "nops.test.beta.v1"
	if err := b.Publish(ctx, other); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	// A filtered consumer that has read nothing yet lags by the matching entries, legacy included.
	cfg := bus.ConsumerConfig{Name: "format", Filter: bus.Filter{Types: []string{legacy.Type}}}
	rec := &deliveries{}
	sub := subscribe(t, b, cfg, func(_ context.Context, d bus.Delivery) error {
		rec.add(d)
		return nil
	})
	eventually(t, "three deliveries", func() bool { return rec.count(plain.ID)+rec.count(traced.ID)+rec.count(legacy.ID) == 3 })
	rec.mu.Lock()
	for _, d := range rec.all {
		if d.ID == legacy.ID {
			if diff := cmp.Diff(legacy, d.Message); diff != "" {
				t.Errorf("legacy entry delivered (-published +read):\n%s", diff)
			}
			if !d.StoredAt.Equal(entryTime(legacyID)) {
				t.Errorf("legacy entry StoredAt %s, want its entry id's time %s", d.StoredAt, entryTime(legacyID))
			}
		}
	}
	rec.mu.Unlock()
	if err := sub.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := c.XGroupSetID(ctx, b.keys.events(), cfg.Name, "0").Err(); err != nil {
		t.Fatalf("XGROUP SETID: %v", err)
	}
	st, err := b.ConsumerStats(ctx, cfg.Name)
	if err != nil {
		t.Fatalf("ConsumerStats: %v", err)
	}
	if st.Pending != 3 {
		t.Errorf("lag of the filtered consumer rewound to the start = %d, want 3 (two entries and a legacy one of its type)", st.Pending)
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
