package natsbus

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
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/testutil/faultproxy"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

const (
	testTenant = "ten_test"
	testType   = "nops.test.event.v1"
)

// testMsg is a valid message with id id.
func testMsg(id string) bus.Message {
	return bus.Message{
		ID: id, Tenant: testTenant, Type: testType,
		Payload: fmt.Appendf(nil, `{"specversion":"1.0","id":%q,"type":%q}`, id, testType),
	}
}

// testMsgs returns n messages with ids prefix-0 … prefix-(n-1).
func testMsgs(prefix string, n int) []bus.Message {
	out := make([]bus.Message, n)
	for i := range out {
		out[i] = testMsg(fmt.Sprintf("%s-%d", prefix, i))
	}
	return out
}

func ids(msgs []bus.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.ID
	}
	return out
}

// collector records the ids a handler was handed.
type collector struct {
	mu  sync.Mutex
	ids []string
	n   map[string]int
}

func newCollector() *collector { return &collector{n: map[string]int{}} }

func (c *collector) handle(_ context.Context, d bus.Delivery) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ids = append(c.ids, d.ID)
	c.n[d.ID]++
	return nil
}

func (c *collector) has(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[id] > 0
}

func (c *collector) all() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.ids)
}

// waitAll waits until every id was handed over.
func (c *collector) waitAll(t *testing.T, want []string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		missing := 0
		for _, id := range want {
			if !c.has(id) {
				missing++
			}
		}
		if missing == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages not consumed", missing, len(want))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func subscribe(t *testing.T, b *Bus, name string, h bus.Handler) bus.Subscription {
	t.Helper()
	sub, err := b.Subscribe(context.Background(), bus.ConsumerConfig{Name: name, AckWait: 10 * time.Second}, h)
	if err != nil {
		t.Fatalf("Subscribe(%s): %v", name, err)
	}
	t.Cleanup(func() { stopSub(t, sub) })
	return sub
}

func stopSub(t *testing.T, sub bus.Subscription) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := sub.Stop(ctx); err != nil {
		t.Errorf("Stop: %v", err)
	}
}

func TestConfigDefaultsAndValidation(t *testing.T) {
	c := Config{}.withDefaults()
	want := Config{
		ConnectTimeout: defaultConnectTimeout, Name: defaultName, Namespace: bus.DefaultNamespace,
		Durability: DurabilitySync, SyncInterval: time.Second, Replicas: 1, Retention: 7 * 24 * time.Hour,
		DedupWindow: 2 * time.Minute, PublishTimeout: 5 * time.Second, MaxPending: 4096, AtomicBatchMin: 16,
	}
	if diff := cmp.Diff(want, c); diff != "" {
		t.Fatalf("defaults (-want +got):\n%s", diff)
	}
	// Atomic batches by default only where they save fsyncs: the embedded server with
	// DurabilitySync.
	for _, tt := range []struct {
		cfg  Config
		want int
	}{
		{Config{Durability: DurabilityAsync}, -1}, {Config{URL: "nats://h:4222"}, -1},
		{Config{URL: "nats://h:4222", AtomicBatchMin: 50}, 50}, {Config{AtomicBatchMin: -3}, -3},
	} {
		if got := tt.cfg.withDefaults().AtomicBatchMin; got != tt.want {
			t.Errorf("AtomicBatchMin of %+v with defaults = %d, want %d", tt.cfg, got, tt.want)
		}
	}
	tests := map[string]struct {
		cfg   Config
		field string
	}{
		"namespace with a dot":      {Config{Namespace: "a.b"}, "namespace"},
		"namespace in upper case":   {Config{Namespace: "Nops"}, "namespace"},
		"unknown durability":        {Config{Durability: "sometimes"}, "durability"},
		"too many replicas":         {Config{URL: "nats://h:4222", Replicas: 7}, "replicas"},
		"replicas when embedded":    {Config{Replicas: 3}, "replicas"},
		"dedup beyond retention":    {Config{Retention: time.Minute, DedupWindow: time.Hour}, "dedup_window"},
		"negative max pending":      {Config{MaxPending: -1}, "max_pending"},
		"certificate without a key": {Config{TLSCertFile: "c.pem"}, "tls_cert_file"},
		"missing creds file":        {Config{CredsFile: "/nonexistent/nops.creds"}, ""},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			err := tt.cfg.withDefaults().validate()
			if !errs.Is(err, errs.Invalid) {
				t.Fatalf("validate = %v, want an errs.Invalid", err)
			}
			if e := errs.As(err); tt.field != "" && (len(e.Fields) != 1 || e.Fields[0].Name != tt.field) {
				t.Fatalf("validate = %v, want field %s", err, tt.field)
			}
		})
	}
	if _, err := Open(context.Background(), Config{StoreDir: t.TempDir(), Namespace: "A.B"}, nil); !errs.Is(err, errs.Invalid) {
		t.Fatalf("Open with an invalid namespace = %v, want an errs.Invalid", err)
	}
}

func TestSupportsMultiFilter(t *testing.T) {
	for v, want := range map[string]bool{
		"2.9.10": false, "2.10.0": true, "2.15.2": true, "3.0.0": true, "v2.11.1": true, "2.2": false, "": false, "x.y": false,
	} {
		if got := supportsMultiFilter(v); got != want {
			t.Errorf("supportsMultiFilter(%q) = %v, want %v", v, got, want)
		}
	}
	for v, want := range map[string]bool{
		"2.11.9": false, "2.12.0": true, "2.12.0-RC.3": true, "v2.15.2": true, "3.0.0": true, "1.12.0": false, "2": false,
	} {
		if got := serverAtLeast(v, 2, 12); got != want {
			t.Errorf("serverAtLeast(%q, 2, 12) = %v, want %v", v, got, want)
		}
	}
}

func TestParseSubject(t *testing.T) {
	b := newBus(Config{Namespace: "ns"}.withDefaults(), nil)
	tests := []struct {
		subject, tenant, typ string
		ok                   bool
	}{
		{"ns.events.t1.nops.a.b.v1", "t1", "nops.a.b.v1", true},
		{"ns.retry.cons.t1.nops.a.b.v1", "t1", "nops.a.b.v1", true},
		{"ns.dlq.t1.cons", "", "", false},
		{"other.events.t1.nops.a.b.v1", "", "", false},
		{"ns.events.t1", "", "", false},
		{"ns.retry.cons", "", "", false},
	}
	for _, tt := range tests {
		tenant, typ, ok := b.parseSubject(tt.subject)
		if tenant != tt.tenant || typ != tt.typ || ok != tt.ok {
			t.Errorf("parseSubject(%q) = %q, %q, %v; want %q, %q, %v", tt.subject, tenant, typ, ok, tt.tenant, tt.typ, tt.ok)
		}
	}
}

// TestEmbeddedDurability: each setting reaches the server's options, and what was published and
// acknowledged survives closing and reopening the store, with the durable consumer resuming
// after the last message it acknowledged.
func TestEmbeddedDurability(t *testing.T) {
	tests := []struct {
		durability Durability
		interval   time.Duration
	}{
		{"", 0}, // the default: sync
		{DurabilitySync, 0},
		{DurabilityAsync, 250 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(string(tt.durability), func(t *testing.T) {
			dir := t.TempDir()
			cfg := Config{StoreDir: dir, Durability: tt.durability, SyncInterval: tt.interval, Namespace: "dur"}
			first := openQuiet(t, cfg)
			js := first.srv.JetStreamConfig()
			if tt.durability == DurabilityAsync {
				if js.SyncAlways || js.SyncInterval != tt.interval {
					t.Fatalf("async: server SyncAlways %v, SyncInterval %s; want false, %s", js.SyncAlways, js.SyncInterval, tt.interval)
				}
			} else if !js.SyncAlways {
				t.Fatalf("sync: server SyncAlways is false")
			}

			before := testMsgs("before", 20)
			if err := first.Publish(ctxT(t), before...); err != nil {
				t.Fatalf("Publish: %v", err)
			}
			c1 := newCollector()
			sub := subscribe(t, first, "durable", c1.handle)
			c1.waitAll(t, ids(before))
			stopSub(t, sub)
			if err := first.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}

			second := open(t, cfg)
			after := testMsgs("after", 5)
			if err := second.Publish(ctxT(t), after...); err != nil {
				t.Fatalf("Publish after reopening: %v", err)
			}
			c2 := newCollector()
			subscribe(t, second, "durable", c2.handle)
			c2.waitAll(t, ids(after))
			if diff := cmp.Diff(ids(after), c2.all()); diff != "" {
				t.Errorf("the reopened consumer did not resume after its last acknowledged message (-want +got):\n%s", diff)
			}
			var stored []string
			if _, err := second.Replay(ctxT(t), time.Time{}, time.Time{}, bus.Filter{}, func(s bus.Stored) error {
				stored = append(stored, s.ID)
				return nil
			}); err != nil {
				t.Fatalf("Replay: %v", err)
			}
			if diff := cmp.Diff(append(ids(before), ids(after)...), stored); diff != "" {
				t.Errorf("stored events after reopening (-want +got):\n%s", diff)
			}
		})
	}
}

// TestStreamsAndHeaders: Open creates the two streams as configured, and a published event
// carries its headers.
func TestStreamsAndHeaders(t *testing.T) {
	b := open(t, Config{StoreDir: t.TempDir(), Namespace: "hdr", Retention: time.Hour, DedupWindow: time.Minute})
	ctx := ctxT(t)
	events, err := b.JetStream().Stream(ctx, "HDR_EVENTS")
	if err != nil {
		t.Fatalf("events stream: %v", err)
	}
	ec := events.CachedInfo().Config
	if diff := cmp.Diff([]string{"hdr.events.>", "hdr.retry.>"}, ec.Subjects); diff != "" {
		t.Errorf("events subjects (-want +got):\n%s", diff)
	}
	if ec.MaxAge != time.Hour || ec.Duplicates != time.Minute || ec.Storage.String() != "File" {
		t.Errorf("events stream: MaxAge %s, Duplicates %s, storage %s", ec.MaxAge, ec.Duplicates, ec.Storage)
	}
	dlq, err := b.JetStream().Stream(ctx, "HDR_DLQ")
	if err != nil {
		t.Fatalf("dlq stream: %v", err)
	}
	if dc := dlq.CachedInfo().Config; dc.MaxAge != 0 || !slices.Equal(dc.Subjects, []string{"hdr.dlq.>"}) {
		t.Errorf("dlq stream: MaxAge %s, subjects %v", dc.MaxAge, dc.Subjects)
	}

	m := testMsg("with-headers")
	m.TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	if err := b.Publish(ctx, m); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	raw, err := events.GetMsg(ctx, 1)
	if err != nil {
		t.Fatalf("GetMsg: %v", err)
	}
	if raw.Subject != "hdr.events."+testTenant+"."+testType {
		t.Errorf("subject %q", raw.Subject)
	}
	for k, v := range map[string]string{
		"Nats-Msg-Id": m.ID, "Nops-Id": "", "Nops-Tenant": m.Tenant, "Nops-Type": m.Type,
		"traceparent": m.TraceParent, "Content-Type": "application/cloudevents+json",
	} {
		if got := raw.Header.Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if err := b.Redeliver(ctx, "c1", m, "redelivery-key"); err != nil {
		t.Fatalf("Redeliver: %v", err)
	}
	raw, err = events.GetMsg(ctx, 2)
	if err != nil {
		t.Fatalf("GetMsg: %v", err)
	}
	if raw.Subject != "hdr.retry.c1."+testTenant+"."+testType || raw.Header.Get("Nats-Msg-Id") != "redelivery-key" || raw.Header.Get("Nops-Id") != m.ID {
		t.Errorf("redelivery stored as %s with headers %v", raw.Subject, raw.Header)
	}
}

// TestOpenUpdatesStreams: reopening with other settings updates the streams instead of failing.
func TestOpenUpdatesStreams(t *testing.T) {
	dir := t.TempDir()
	first := openQuiet(t, Config{StoreDir: dir, Namespace: "upd", Retention: time.Hour})
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	second := open(t, Config{StoreDir: dir, Namespace: "upd", Retention: 2 * time.Hour})
	s, err := second.JetStream().Stream(ctxT(t), "UPD_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config.MaxAge; got != 2*time.Hour {
		t.Fatalf("MaxAge after reopening = %s, want 2h", got)
	}
}

// TestBackpressure: with a window of one publish and a broker that does not answer, a publish
// fails with backpressure after about PublishTimeout.
func TestBackpressure(t *testing.T) {
	srv := privateServer(t, server.Options{JetStream: true, StoreDir: t.TempDir()})
	proxy := faultproxy.New(t, srv.Addr().String())
	const timeout = 300 * time.Millisecond
	b := open(t, Config{URL: "nats://" + proxy.Addr(), Namespace: "bp", MaxPending: 1, PublishTimeout: timeout, ConnectTimeout: 5 * time.Second})
	if err := b.Publish(ctxT(t), testMsg("before")); err != nil {
		t.Fatalf("Publish before the outage: %v", err)
	}

	proxy.Cut()
	waitFor(t, "the bus to notice the outage", func() bool { return b.Conn().Status() != nats.CONNECTED })
	// The first message takes the only slot and waits for an acknowledgement that cannot
	// come; the second finds no room. The client fails the publishes in flight when it
	// notices the disconnection, on a goroutine of its own: a first attempt may still meet
	// that.
	var (
		err     error
		elapsed time.Duration
	)
	for attempt := 1; ; attempt++ {
		start := time.Now()
		err = b.Publish(context.Background(), testMsg("stuck"), testMsg("no-room"))
		elapsed = time.Since(start)
		if errors.Is(err, bus.ErrBackpressure) || attempt == 5 || !errs.Is(err, errs.Unavailable) {
			break
		}
		t.Logf("attempt %d: %v", attempt, err)
	}
	if !errors.Is(err, bus.ErrBackpressure) {
		t.Fatalf("Publish with a full window = %v, want an error wrapping bus.ErrBackpressure", err)
	}
	if !errs.Is(err, errs.Unavailable) {
		t.Errorf("backpressure error code %q, want %q", errs.CodeOf(err), errs.Unavailable)
	}
	if e := errs.As(err); e == nil || e.RetryAfter <= 0 {
		t.Errorf("backpressure error %v has no RetryAfter", err)
	}
	if elapsed > timeout+5*time.Second {
		t.Errorf("Publish returned after %s, PublishTimeout %s", elapsed, timeout)
	}
	t.Logf("backpressure after %s (PublishTimeout %s): %v", elapsed, timeout, err)

	// A context deadline shorter than PublishTimeout bounds the wait for room as well.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := b.Publish(ctx, testMsg("deadline")); err != nil && !errs.Is(err, errs.Unavailable) {
		t.Errorf("Publish with a short deadline during the outage = %v, want an unavailable error", err)
	} else if err == nil {
		t.Errorf("Publish with a short deadline during the outage succeeded")
	}

	proxy.Restore()
	waitFor(t, "publishing to succeed again", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return b.Publish(ctx, testMsg("after")) == nil
	})
}

// TestBackpressureSharedWindow: the window is shared by concurrent callers, and a batch larger
// than the window goes through on its own acknowledgements.
func TestBackpressureSharedWindow(t *testing.T) {
	b := open(t, Config{StoreDir: t.TempDir(), Namespace: "win", MaxPending: 4})
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	for p := range 8 {
		wg.Go(func() {
			if err := b.Publish(ctxT(t), testMsgs(fmt.Sprintf("p%d", p), 50)...); err != nil {
				errc <- err
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatalf("Publish: %v", err)
	}
	if n := len(b.slots); n != 0 {
		t.Fatalf("%d slots still taken after every publish returned", n)
	}
	info, err := b.events.Info(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 400 {
		t.Fatalf("stream holds %d messages, want 400", info.State.Msgs)
	}
}

func TestPublishAfterCloseAndCancelled(t *testing.T) {
	b := openQuiet(t, Config{StoreDir: t.TempDir(), Namespace: "cls"})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Publish(ctx, testMsg("cancelled")); err == nil {
		t.Errorf("Publish with a cancelled context succeeded")
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(context.Background(), testMsg("closed")); !errs.Is(err, errs.Unavailable) {
		t.Errorf("Publish after Close = %v, want unavailable", err)
	}
	if err := b.Redeliver(context.Background(), "c", testMsg("closed"), "k"); !errs.Is(err, errs.Unavailable) {
		t.Errorf("Redeliver after Close = %v, want unavailable", err)
	}
	if err := b.Publish(context.Background(), testMsgs("closed-batch", 2*DefaultAtomicBatchMin)...); !errs.Is(err, errs.Unavailable) {
		t.Errorf("Publish of an atomic batch after Close = %v, want unavailable", err)
	}
}

// TestExternalOutage: NATS cut by a proxy while a publisher loops: the bus reconnects by itself,
// publishing resumes, and every event whose Publish returned nil is consumed. It runs against
// the shared NATS and against a server of this process's nats-server version, there also with
// Publish calls of 20 events sent as atomic batches.
func TestExternalOutage(t *testing.T) {
	t.Run("shared", func(t *testing.T) {
		outage(t, services.NATSURL(t), 1)
	})
	t.Run("private", func(t *testing.T) {
		srv := privateServer(t, server.Options{JetStream: true, StoreDir: t.TempDir()})
		outage(t, srv.ClientURL(), 1)
	})
	t.Run("private-atomic", func(t *testing.T) {
		srv := privateServer(t, server.Options{JetStream: true, StoreDir: t.TempDir()})
		outage(t, srv.ClientURL(), 20)
	})
}

// outage runs TestExternalOutage against upstream with batch events per Publish (atomic batches
// from 2 events on, where the server has them).
func outage(t *testing.T, upstream string, batch int) {
	proxy := faultproxy.New(t, services.HostPort(t, upstream))
	ns := services.UniqueName("outage")
	url := services.WithHost(t, upstream, proxy.Addr())
	t.Cleanup(func() { services.DeleteNATSStreams(t, upstream, ns) })
	b := open(t, Config{URL: url, Namespace: ns, PublishTimeout: 500 * time.Millisecond, ConnectTimeout: 5 * time.Second, AtomicBatchMin: 2})
	if batch > 1 && !b.atomicOn.Load() && serverAtLeast(b.nc.ConnectedServerVersion(), 2, 12) {
		t.Fatalf("atomic publish not enabled on NATS %s", b.nc.ConnectedServerVersion())
	}
	got := newCollector()
	// A message on its way to the consumer when the connection broke comes back after
	// AckWait: a short one keeps the test short.
	sub, err := b.Subscribe(context.Background(), bus.ConsumerConfig{Name: "outage", AckWait: 2 * time.Second}, got.handle)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopSub(t, sub) })

	var (
		mu        sync.Mutex
		acked     []string
		failures  int
		lastOK    time.Time
		stop      = make(chan struct{})
		published = make(chan struct{})
	)
	okCount := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	go func() {
		defer close(published)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			msgs := testMsgs(fmt.Sprintf("%s-%d", ns, i), batch)
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			err := b.Publish(ctx, msgs...)
			cancel()
			mu.Lock()
			if err == nil {
				acked = append(acked, ids(msgs)...)
				lastOK = time.Now()
			} else {
				failures++
			}
			mu.Unlock()
		}
	}()
	waitFor(t, "publishing before the outage", func() bool { return okCount() >= 50 })
	proxy.Cut()
	waitFor(t, "the bus to notice the outage", func() bool { return b.Conn().Status() != nats.CONNECTED })
	waitFor(t, "publishes failing during the outage", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return failures > 0
	})
	restored := time.Now()
	proxy.Restore()
	var recovery time.Duration
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		ok := lastOK.After(restored)
		recovery = lastOK.Sub(restored)
		mu.Unlock()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no successful publish within 30 s of the restore")
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("first successful publish %s after NATS came back (goal < 3 s)", recovery)
	if recovery > 30*time.Second {
		t.Errorf("publishing resumed %s after NATS came back", recovery)
	}
	target := okCount() + 50
	waitFor(t, "publishing after the outage", func() bool { return okCount() >= target })
	close(stop)
	<-published

	mu.Lock()
	want := slices.Clone(acked)
	mu.Unlock()
	got.waitAll(t, want)
	t.Logf("%d events acknowledged, %d publishes failed during the outage, 0 acknowledged events lost", len(want), failures)
}

func TestReplayWindow(t *testing.T) {
	b := open(t, Config{StoreDir: t.TempDir(), Namespace: "rpl"})
	ctx := ctxT(t)
	first := testMsgs("first", 3)
	if err := b.Publish(ctx, first...); err != nil {
		t.Fatal(err)
	}
	var firstAt time.Time
	if _, err := b.Replay(ctx, time.Time{}, time.Time{}, bus.Filter{}, func(s bus.Stored) error {
		if firstAt.IsZero() {
			firstAt = s.StoredAt
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	mid := time.Now()
	waitFor(t, "the clock to move on", func() bool { return time.Since(mid) > 2*time.Millisecond })
	second := testMsgs("second", 2)
	other := testMsg("other")
	other.Tenant = "ten_other"
	if err := b.Publish(ctx, append(second, other)...); err != nil {
		t.Fatal(err)
	}
	if err := b.Redeliver(ctx, "c", first[0], "k1"); err != nil {
		t.Fatal(err)
	}
	replay := func(from, to time.Time, f bus.Filter) ([]string, bus.ReplayResult) {
		t.Helper()
		var got []string
		res, err := b.Replay(ctx, from, to, f, func(s bus.Stored) error {
			got = append(got, s.ID)
			return nil
		})
		if err != nil {
			t.Fatalf("Replay: %v", err)
		}
		return got, res
	}
	got, res := replay(time.Time{}, mid, bus.Filter{})
	if diff := cmp.Diff(ids(first), got); diff != "" {
		t.Errorf("replay before mid (-want +got):\n%s", diff)
	}
	if res.Matched != 3 || !res.Oldest.Equal(firstAt) {
		t.Errorf("result %+v, want 3 matched, oldest %s", res, firstAt)
	}
	got, _ = replay(mid, time.Now().Add(time.Hour), bus.Filter{Tenants: []string{testTenant}})
	if diff := cmp.Diff(ids(second), got); diff != "" {
		t.Errorf("replay of the tenant after mid, without redeliveries (-want +got):\n%s", diff)
	}
	if _, err := b.Replay(ctx, mid, mid, bus.Filter{}, func(bus.Stored) error { return nil }); !errs.Is(err, errs.Invalid) {
		t.Errorf("Replay with to == from = %v, want invalid", err)
	}
	stopErr := errors.New("stop")
	n := 0
	if _, err := b.Replay(ctx, time.Time{}, time.Time{}, bus.Filter{}, func(bus.Stored) error {
		n++
		return stopErr
	}); !errors.Is(err, stopErr) || n != 1 {
		t.Errorf("Replay stopping at the first callback error = %v after %d calls", err, n)
	}
}

func TestConsumerStatsNotFound(t *testing.T) {
	b := open(t, Config{StoreDir: t.TempDir(), Namespace: "stats"})
	if _, err := b.ConsumerStats(ctxT(t), "nobody"); !errs.Is(err, errs.NotFound) {
		t.Fatalf("ConsumerStats of an unknown consumer = %v, want not found", err)
	}
	if _, err := b.ConsumerStats(ctxT(t), "bad.name"); !errs.Is(err, errs.Invalid) {
		t.Fatalf("ConsumerStats of an invalid name = %v, want invalid", err)
	}
}

// TestSplitConsumers: on a NATS older than 2.10 (forced here) a consumer is one consumer per
// filter subject; changing the filter deletes the consumers of the subjects left out.
func TestSplitConsumers(t *testing.T) {
	b := open(t, Config{StoreDir: t.TempDir(), Namespace: "split"})
	b.multiFilter = false
	ctx := ctxT(t)
	cfg := bus.ConsumerConfig{Name: "c", Filter: bus.Filter{Tenants: []string{"a", "b"}}}
	c := newCollector()
	sub, err := b.Subscribe(ctx, cfg, c.handle)
	if err != nil {
		t.Fatal(err)
	}
	infos, err := b.splitConsumers(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 3 { // a, b, retry
		t.Fatalf("%d consumers for a filter of two tenants, want 3", len(infos))
	}
	msgs := []bus.Message{testMsg("x1"), testMsg("x2"), testMsg("x3")}
	msgs[0].Tenant, msgs[1].Tenant, msgs[2].Tenant = "a", "b", "c"
	if err := b.Publish(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	if err := b.Redeliver(ctx, "c", msgs[2], "again"); err != nil {
		t.Fatal(err)
	}
	c.waitAll(t, []string{"x1", "x2", "x3"})
	stopSub(t, sub)

	cfg.Filter.Tenants = []string{"a"}
	sub, err = b.Subscribe(ctx, cfg, c.handle)
	if err != nil {
		t.Fatal(err)
	}
	defer stopSub(t, sub)
	infos, err = b.splitConsumers(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 2 {
		t.Fatalf("%d consumers after narrowing the filter, want 2", len(infos))
	}
	st, err := b.ConsumerStats(ctx, "c")
	if err != nil || st.Pending != 0 {
		t.Fatalf("ConsumerStats = %+v, %v", st, err)
	}
	if _, err := b.ConsumerStats(ctx, "c"+strings.Repeat("x", 3)); !errs.Is(err, errs.NotFound) {
		t.Fatalf("ConsumerStats of another name = %v, want not found", err)
	}
}

// TestCloseLetsHandlersDeadLetter: a handler still running when Close begins can still put its
// message in the DLQ; Close waits for it.
func TestCloseLetsHandlersDeadLetter(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{StoreDir: dir, Namespace: "closing"}
	b := openQuiet(t, cfg)
	started, release := make(chan struct{}), make(chan struct{})
	_, err := b.Subscribe(context.Background(), bus.ConsumerConfig{Name: "slow"}, func(context.Context, bus.Delivery) error {
		close(started)
		<-release
		return bus.Terminal(errors.New("gave up during shutdown"))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctxT(t), testMsg("late")); err != nil {
		t.Fatal(err)
	}
	<-started
	closed := make(chan error, 1)
	go func() { closed <- b.Close() }()
	waitFor(t, "Close to begin", func() bool {
		b.mu.RLock()
		defer b.mu.RUnlock()
		return b.closing
	})
	if err := b.Publish(context.Background(), testMsg("refused")); !errs.Is(err, errs.Unavailable) {
		t.Errorf("Publish while closing = %v, want unavailable", err)
	}
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while a handler was running", err)
	default:
	}
	close(release)
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}

	again := open(t, cfg)
	n, err := again.CountDeadLetters(ctxT(t), testTenant)
	if err != nil || n != 1 {
		t.Fatalf("CountDeadLetters after reopening = %d, %v; want 1", n, err)
	}
}

// TestConsumerUpdate: subscribing again with another filter and ack wait updates the consumer:
// the new filter's messages arrive, the old filter's no longer do, and the ack wait is the new
// one. It runs on the embedded server and on the shared NATS (which may be older than 2.10).
func TestConsumerUpdate(t *testing.T) {
	t.Run("embedded", func(t *testing.T) {
		consumerUpdate(t, open(t, Config{StoreDir: t.TempDir(), Namespace: "cupd"}))
	})
	t.Run("shared", func(t *testing.T) {
		url := services.NATSURL(t)
		ns := services.UniqueName("cupd")
		t.Cleanup(func() { services.DeleteNATSStreams(t, url, ns) })
		consumerUpdate(t, open(t, Config{URL: url, Namespace: ns}))
	})
}

func consumerUpdate(t *testing.T, b *Bus) {
	ctx := ctxT(t)
	c := newCollector()
	cfg := bus.ConsumerConfig{Name: "upd", AckWait: 3 * time.Second, Filter: bus.Filter{Tenants: []string{"a"}}}
	sub, err := b.Subscribe(ctx, cfg, c.handle)
	if err != nil {
		t.Fatal(err)
	}
	first := []bus.Message{testMsg("a1"), testMsg("b1")}
	first[0].Tenant, first[1].Tenant = "a", "b"
	if err := b.Publish(ctx, first...); err != nil {
		t.Fatal(err)
	}
	c.waitAll(t, []string{"a1"})
	stopSub(t, sub)

	cfg.AckWait, cfg.Filter = time.Second, bus.Filter{Tenants: []string{"b"}}
	sub, err = b.Subscribe(ctx, cfg, c.handle)
	if err != nil {
		t.Fatalf("Subscribe with a new filter and ack wait: %v", err)
	}
	defer stopSub(t, sub)
	second := []bus.Message{testMsg("a2"), testMsg("b2")}
	second[0].Tenant, second[1].Tenant = "a", "b"
	if err := b.Publish(ctx, second...); err != nil {
		t.Fatal(err)
	}
	c.waitAll(t, []string{"b2"})
	if c.has("a2") {
		t.Errorf("a message outside the new filter was delivered")
	}
	var waits []time.Duration
	if b.multiFilter {
		cons, err := b.events.Consumer(ctx, "upd")
		if err != nil {
			t.Fatal(err)
		}
		waits = append(waits, cons.CachedInfo().Config.AckWait)
	} else {
		infos, err := b.splitConsumers(ctx, "upd")
		if err != nil {
			t.Fatal(err)
		}
		for _, ci := range infos {
			waits = append(waits, ci.Config.AckWait)
		}
	}
	for _, w := range waits {
		if w != time.Second {
			t.Errorf("consumer ack waits %v after the update, want 1s", waits)
			break
		}
	}
}
