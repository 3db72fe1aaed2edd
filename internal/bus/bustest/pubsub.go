package bustest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/errs"
)

// testPublishSubscribe: a subscriber receives every message byte-identical, with the delivery's
// own fields set.
func testPublishSubscribe(t *testing.T, s *suite) {
	e := s.newEnv(t)
	if err := e.b.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	noTrace := e.msg(tenantB, typeB, "no-trace")
	noTrace.TraceParent = ""
	msgs := []bus.Message{e.msg(tenantA, typeA, "one"), e.msg(tenantB, typeA, "two"), noTrace}
	e.publish(t, msgs...)

	rec := newRecorder()
	e.subscribe(t, consumer("reader"), rec.handler(nil))
	for _, m := range msgs {
		rec.waitAll(t, "the published messages", m.ID)
	}
	for _, m := range msgs {
		d := rec.of(m.ID)[0]
		if diff := cmp.Diff(m, d.Message, msgOpts...); diff != "" {
			t.Errorf("delivered message %s differs from the published one (-published +delivered):\n%s", m.ID, diff)
		}
		if d.Consumer != "reader" {
			t.Errorf("%s: Consumer = %q, want %q", m.ID, d.Consumer, "reader")
		}
		if d.Attempt != 1 {
			t.Errorf("%s: Attempt = %d, want 1", m.ID, d.Attempt)
		}
		if d.Position == "" {
			t.Errorf("%s: Position is empty", m.ID)
		}
		e.checkStoredAt(t, m.ID+" StoredAt", d.StoredAt)
	}
}

// testOrder: one Publish of a tenant's messages of one type is received in order by a consumer
// with Concurrency 1.
func testOrder(t *testing.T, s *suite) {
	e := s.newEnv(t)
	msgs := e.msgs(tenantA, typeA, "ordered", 50)
	e.publish(t, msgs...)
	rec := newRecorder()
	e.subscribe(t, consumer("ordered"), rec.handler(nil))
	var want []string
	for _, m := range msgs {
		want = append(want, m.ID)
	}
	rec.waitAll(t, "the ordered messages", want...)
	if diff := cmp.Diff(want, rec.ids()[:len(want)]); diff != "" {
		t.Errorf("delivery order differs from publish order (-published +delivered):\n%s", diff)
	}
}

// testBrokerDedup: the same message id published twice within the dedup window is stored and
// delivered once.
func testBrokerDedup(t *testing.T, s *suite) {
	e := s.newEnv(t)
	m := e.msg(tenantA, typeA, "dup")
	began := time.Now()
	e.publish(t, m)
	e.publish(t, m)
	if time.Since(began) >= s.f.DedupWindow {
		t.Skipf("publishing twice took longer than the dedup window %s", s.f.DedupWindow)
	}
	rec := newRecorder()
	e.subscribe(t, consumer("dedup"), rec.handler(nil))
	rec.waitAll(t, "the message", m.ID)
	e.sentinel(t, tenantA, typeA, rec)
	if n := rec.count(m.ID); n != 1 {
		t.Errorf("a message published twice within the dedup window was delivered %d times, want 1", n)
	}
	stored := 0
	if _, err := e.b.Replay(t.Context(), e.start.Add(-time.Hour), time.Now().Add(time.Hour), bus.Filter{}, func(st bus.Stored) error {
		if st.ID == m.ID {
			stored++
		}
		return nil
	}); err != nil {
		t.Fatalf("Replay: %v", err)
	}
	if stored != 1 {
		t.Errorf("a message published twice within the dedup window is stored %d times, want 1", stored)
	}
}

// testConsumerGroups: subscriptions with one name share the messages; different names each get
// all of them.
func testConsumerGroups(t *testing.T, s *suite) {
	e := s.newEnv(t)
	group, other := newRecorder(), newRecorder()
	e.subscribe(t, consumer("group"), group.handler(nil))
	e.subscribe(t, consumer("group"), group.handler(nil))
	e.subscribe(t, consumer("other"), other.handler(nil))

	msgs := e.msgs(tenantA, typeA, "shared", 40)
	e.publish(t, msgs...)
	var ids []string
	for _, m := range msgs {
		ids = append(ids, m.ID)
	}
	group.waitAll(t, "the group's messages", ids...)
	other.waitAll(t, "the other consumer's messages", ids...)
	e.sentinel(t, tenantA, typeA, group, other)
	for _, id := range ids {
		if n := group.count(id); n != 1 {
			t.Errorf("two subscriptions of one consumer group handled %s %d times in total, want 1", id, n)
		}
		if n := other.count(id); n != 1 {
			t.Errorf("consumer other handled %s %d times, want 1", id, n)
		}
	}
	for _, d := range other.of(ids[0]) {
		if d.Consumer != "other" {
			t.Errorf("Consumer = %q, want other", d.Consumer)
		}
	}
}

// testFilters: a consumer is handed only the tenants and types its filter selects.
func testFilters(t *testing.T, s *suite) {
	e := s.newEnv(t)
	type sub struct {
		name   string
		filter bus.Filter
		match  func(m bus.Message) bool
		rec    *recorder
	}
	subs := []*sub{
		{name: "by-tenant", filter: bus.Filter{Tenants: []string{tenantA}}, match: func(m bus.Message) bool { return m.Tenant == tenantA }},
		{name: "by-type", filter: bus.Filter{Types: []string{typeA}}, match: func(m bus.Message) bool { return m.Type == typeA }},
		{name: "by-both", filter: bus.Filter{Tenants: []string{tenantA}, Types: []string{typeA}},
			match: func(m bus.Message) bool { return m.Tenant == tenantA && m.Type == typeA }},
		{name: "by-lists", filter: bus.Filter{Tenants: []string{tenantB, tenantA}, Types: []string{typeB}},
			match: func(m bus.Message) bool { return m.Type == typeB }},
	}
	for _, sb := range subs {
		sb.rec = newRecorder()
		cfg := consumer(sb.name)
		cfg.Filter = sb.filter
		e.subscribe(t, cfg, sb.rec.handler(nil))
	}
	var msgs []bus.Message
	for i := range 3 {
		for _, tenant := range []string{tenantA, tenantB} {
			for _, typ := range []string{typeA, typeB} {
				msgs = append(msgs, e.msg(tenant, typ, fmt.Sprintf("%s-%s-%d", tenant, typ, i)))
			}
		}
	}
	e.publish(t, msgs...)
	// The last message matches every filter: once a consumer has it, it has seen everything
	// published before.
	last := e.msg(tenantA, typeB, "last")
	last2 := e.msg(tenantA, typeA, "last2")
	e.publish(t, last, last2)
	for _, sb := range subs {
		var want []string
		for _, m := range append(msgs, last, last2) {
			if sb.match(m) {
				want = append(want, m.ID)
			}
		}
		sb.rec.waitAll(t, "the messages consumer "+sb.name+" selects", want...)
		if sb.match(last) {
			sb.rec.waitAll(t, "the last message", last.ID)
		}
		if sb.match(last2) {
			sb.rec.waitAll(t, "the last message", last2.ID)
		}
		for _, m := range msgs {
			if !sb.match(m) && sb.rec.count(m.ID) > 0 {
				t.Errorf("consumer %s with filter %+v was handed %s (tenant %s, type %s)", sb.name, sb.filter, m.ID, m.Tenant, m.Type)
			}
		}
		for _, d := range sb.rec.of(want[0]) {
			if !sb.filter.Match(d.Tenant, d.Type) {
				t.Errorf("consumer %s was handed a message outside its filter: %s", sb.name, d.ID)
			}
		}
	}
}

// testInvalidPublish: an invalid message is an errs.Invalid and nothing of the call is
// published.
func testInvalidPublish(t *testing.T, s *suite) {
	e := s.newEnv(t)
	valid := e.msg(tenantA, typeA, "valid")
	bad := func(label string, change func(m *bus.Message)) bus.Message {
		m := e.msg(tenantA, typeA, label)
		change(&m)
		return m
	}
	cases := map[string]bus.Message{
		"empty id":              bad("x1", func(m *bus.Message) { m.ID = "" }),
		"tenant with a dot":     bad("x2", func(m *bus.Message) { m.Tenant = "a.b" }),
		"empty tenant":          bad("x3", func(m *bus.Message) { m.Tenant = "" }),
		"malformed type":        bad("x4", func(m *bus.Message) { m.Type = "Not.A.Type" }),
		"empty payload":         bad("x5", func(m *bus.Message) { m.Payload = nil }),
		"payload too large":     bad("x6", func(m *bus.Message) { m.Payload = make([]byte, bus.MaxPayload+1) }),
		"traceparent two lines": bad("x7", func(m *bus.Message) { m.TraceParent = "00-a\r\nX-Evil: 1" }),
	}
	for name, m := range cases {
		err := e.b.Publish(t.Context(), valid, m)
		if !errs.Is(err, errs.Invalid) {
			t.Errorf("Publish(valid, %s) = %v, want an errs.Invalid", name, err)
		}
	}
	n := 0
	res, err := e.b.Replay(t.Context(), e.start.Add(-time.Hour), time.Now().Add(time.Hour), bus.Filter{}, func(bus.Stored) error {
		n++
		return nil
	})
	if err != nil {
		t.Fatalf("Replay: %v", err)
	}
	if n != 0 || res.Matched != 0 {
		t.Errorf("after rejected publishes the stream holds %d messages (Matched %d), want none", n, res.Matched)
	}
}

// testInvalidSubscribe: an invalid consumer configuration is an errs.Invalid.
func testInvalidSubscribe(t *testing.T, s *suite) {
	e := s.newEnv(t)
	cases := map[string]func(c *bus.ConsumerConfig){
		"empty name":            func(c *bus.ConsumerConfig) { c.Name = "" },
		"name with a dot":       func(c *bus.ConsumerConfig) { c.Name = "a.b" },
		"name with a wildcard":  func(c *bus.ConsumerConfig) { c.Name = "a*" },
		"negative max":          func(c *bus.ConsumerConfig) { c.MaxDeliveries = -1 },
		"ack wait too short":    func(c *bus.ConsumerConfig) { c.AckWait = 10 * time.Millisecond },
		"negative concurrency":  func(c *bus.ConsumerConfig) { c.Concurrency = -1 },
		"filter tenant invalid": func(c *bus.ConsumerConfig) { c.Filter.Tenants = []string{"a b"} },
		"filter type invalid":   func(c *bus.ConsumerConfig) { c.Filter.Types = []string{"Nope"} },
		"filter type wildcard":  func(c *bus.ConsumerConfig) { c.Filter.Types = []string{typeA, ">"} },
	}
	for name, change := range cases {
		cfg := consumer("valid")
		change(&cfg)
		sub, err := e.b.Subscribe(t.Context(), cfg, func(context.Context, bus.Delivery) error { return nil })
		if sub != nil {
			stop(t, sub)
		}
		if !errs.Is(err, errs.Invalid) {
			t.Errorf("Subscribe with %s = %v, want an errs.Invalid", name, err)
		}
	}
}

// testConcurrency: many publishers and a consumer with Concurrency 4: every message handled,
// none twice in a fault-free run, never more than 4 handlers at once.
func testConcurrency(t *testing.T, s *suite) {
	e := s.newEnv(t)
	const (
		publishers = 8
		perPub     = 250
		batch      = 10
		conc       = 4
	)
	var running, maxRunning atomic.Int64
	rec := newRecorder()
	cfg := consumer("concurrent")
	cfg.Concurrency = conc
	cfg.AckWait = 30 * time.Second // no redelivery however loaded the machine is
	e.subscribe(t, cfg, rec.handler(func(ctx context.Context, d bus.Delivery, _ int) error {
		n := running.Add(1)
		defer running.Add(-1)
		for {
			m := maxRunning.Load()
			if n <= m || maxRunning.CompareAndSwap(m, n) {
				break
			}
		}
		return nil
	}))

	var wg sync.WaitGroup
	errc := make(chan error, publishers)
	var ids []string
	for p := range publishers {
		msgs := e.msgs([]string{tenantA, tenantB}[p%2], typeA, fmt.Sprintf("p%d", p), perPub)
		for _, m := range msgs {
			ids = append(ids, m.ID)
		}
		wg.Go(func() {
			for i := 0; i < len(msgs); i += batch {
				if err := e.b.Publish(t.Context(), msgs[i:min(i+batch, len(msgs))]...); err != nil {
					errc <- fmt.Errorf("publisher %d: %w", p, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatalf("Publish: %v", err)
	}
	rec.waitAll(t, "every message", ids...)
	e.sentinel(t, tenantA, typeA, rec)
	dups := 0
	for _, id := range ids {
		dups += rec.count(id) - 1
	}
	if dups != 0 {
		t.Errorf("%d duplicate deliveries of %d messages in a fault-free run, want 0", dups, len(ids))
	}
	if m := maxRunning.Load(); m > conc {
		t.Errorf("%d handlers ran at once with Concurrency %d", m, conc)
	}
	t.Logf("%d messages, at most %d handlers at once", len(ids), maxRunning.Load())
}

// testClose: Close is idempotent; publishing or subscribing afterwards fails; running
// subscriptions are stopped.
func testClose(t *testing.T, s *suite) {
	e := s.newEnv(t)
	e.publish(t, e.msg(tenantA, typeA, "before"))
	rec := newRecorder()
	sub, err := e.b.Subscribe(t.Context(), consumer("closing"), rec.handler(nil))
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	rec.waitAll(t, "the message", e.id("before"))
	if err := e.b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := e.b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := e.b.Publish(t.Context(), e.msg(tenantA, typeA, "after")); err == nil {
		t.Errorf("Publish after Close succeeded")
	}
	if sub2, err := e.b.Subscribe(t.Context(), consumer("late"), rec.handler(nil)); err == nil {
		stop(t, sub2)
		t.Errorf("Subscribe after Close succeeded")
	}
	ctx, cancel := context.WithTimeout(t.Context(), stopTimeout)
	defer cancel()
	_ = sub.Stop(ctx) // stopped by Close already: it must return, whatever it reports
	if ctx.Err() != nil {
		t.Errorf("Stop after Close did not return within %s", stopTimeout)
	}
}

// testDeliverNew: a consumer created with DeliverNew starts at the end of the stream; one
// created without it receives everything the stream holds.
func testDeliverNew(t *testing.T, s *suite) {
	e := s.newEnv(t)
	old := e.msg(tenantA, typeA, "old")
	e.publish(t, old)
	fresh, all := newRecorder(), newRecorder()
	cfg := consumer("fresh")
	cfg.DeliverNew = true
	e.subscribe(t, cfg, fresh.handler(nil))
	e.subscribe(t, consumer("all"), all.handler(nil))
	all.waitAll(t, "the old message on a consumer without DeliverNew", old.ID)
	e.sentinel(t, tenantA, typeA, fresh, all)
	if n := fresh.count(old.ID); n != 0 {
		t.Errorf("a consumer created with DeliverNew was handed a message published before it existed")
	}
}

// testFilterUpdate: subscribing again under an existing name with another filter replaces the
// consumer's filter.
func testFilterUpdate(t *testing.T, s *suite) {
	e := s.newEnv(t)
	cfg := consumer("refocused")
	cfg.Filter = bus.Filter{Tenants: []string{tenantA}}
	rec1 := newRecorder()
	sub := e.subscribe(t, cfg, rec1.handler(nil))
	e.sentinel(t, tenantA, typeA, rec1)
	stop(t, sub)

	cfg.Filter = bus.Filter{Tenants: []string{tenantB}}
	rec2 := newRecorder()
	e.subscribe(t, cfg, rec2.handler(nil))
	a, b := e.msg(tenantA, typeA, "for-a"), e.msg(tenantB, typeA, "for-b")
	e.publish(t, a, b)
	rec2.waitAll(t, "a message of the new filter's tenant", b.ID)
	e.sentinel(t, tenantB, typeB, rec2)
	if rec2.count(a.ID) != 0 {
		t.Errorf("after the filter changed to %s, the consumer was still handed %s's messages", tenantB, tenantA)
	}
}

// testLargePayload: the largest message Validate accepts (a payload of MaxPayload bytes, the
// longest id and tenant) is published and delivered intact: whatever the broker adds (headers)
// must fit in its limits.
func testLargePayload(t *testing.T, s *suite) {
	e := s.newEnv(t)
	m := e.msg(strings.Repeat("t", 64), typeA, "large")
	m.ID = (m.ID + strings.Repeat("x", 128))[:128]
	m.Payload = make([]byte, bus.MaxPayload)
	for i := range m.Payload {
		m.Payload[i] = byte('a' + i%26)
	}
	e.publish(t, m)
	rec := newRecorder()
	e.subscribe(t, consumer("large"), rec.handler(nil))
	rec.waitAll(t, "the large message", m.ID)
	if d := rec.of(m.ID)[0]; d.ID != m.ID || d.Tenant != m.Tenant || string(d.Payload) != string(m.Payload) {
		t.Errorf("a payload of %d bytes arrived as %d bytes, or altered", len(m.Payload), len(d.Payload))
	}
}
