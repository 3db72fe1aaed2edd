package bustest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/errs"
)

// replayAll returns everything Replay passes to fn between from and to with filter f.
func (e *env) replayAll(t *testing.T, from, to time.Time, f bus.Filter) ([]bus.Stored, bus.ReplayResult) {
	t.Helper()
	var out []bus.Stored
	res, err := e.b.Replay(t.Context(), from, to, f, func(st bus.Stored) error {
		st.Payload = slices.Clone(st.Payload)
		out = append(out, st)
		return nil
	})
	if err != nil {
		t.Fatalf("Replay(%s, %s, %+v): %v", from, to, f, err)
	}
	return out, res
}

// waitPast waits until the clock is past at by a few milliseconds, so that what is published
// next is stored strictly later than at even by a millisecond clock.
func waitPast(t *testing.T, at time.Time) {
	t.Helper()
	eventually(t, "the clock to pass "+at.String(), func() bool { return time.Now().After(at.Add(3 * time.Millisecond)) }, nil)
}

// testReplay: Replay passes, in stream order, exactly the messages stored in [from, to) that
// match the filter, and reports the oldest message held.
func testReplay(t *testing.T, s *suite) {
	e := s.newEnv(t)
	batch := func(label string) []bus.Message {
		return []bus.Message{
			e.msg(tenantA, typeA, label+"-aa"), e.msg(tenantB, typeA, label+"-ba"),
			e.msg(tenantA, typeB, label+"-ab"), e.msg(tenantB, typeB, label+"-bb"),
			e.msg(tenantA, typeA, label+"-aa2"),
		}
	}
	before, during, after := batch("before"), batch("during"), batch("after")
	var published []bus.Message
	for i, b := range [][]bus.Message{before, during, after} {
		e.publish(t, b...)
		published = append(published, b...)
		if i < 2 {
			all, _ := e.replayAll(t, e.start.Add(-time.Hour), time.Now().Add(time.Hour), bus.Filter{})
			if len(all) == 0 {
				t.Fatalf("Replay finds nothing after a publish")
			}
			waitPast(t, all[len(all)-1].StoredAt)
		}
	}

	all, res := e.replayAll(t, e.start.Add(-time.Hour), time.Now().Add(time.Hour), bus.Filter{})
	if len(all) != len(published) || res.Matched != len(published) {
		t.Fatalf("Replay of everything: %d messages, Matched %d; want %d", len(all), res.Matched, len(published))
	}
	for i, st := range all {
		if diff := cmp.Diff(published[i], st.Message, msgOpts...); diff != "" {
			t.Errorf("replayed message %d differs from the published one (-published +replayed):\n%s", i, diff)
		}
		if st.Position == "" {
			t.Errorf("replayed message %d has no Position", i)
		}
		e.checkStoredAt(t, "replayed StoredAt", st.StoredAt)
		if i > 0 && st.StoredAt.Before(all[i-1].StoredAt) {
			t.Errorf("replayed message %d stored at %s, before message %d at %s", i, st.StoredAt, i-1, all[i-1].StoredAt)
		}
	}
	if res.Oldest.IsZero() || res.Oldest.After(all[0].StoredAt) {
		t.Errorf("ReplayResult.Oldest = %s, want set and not after the first message's %s", res.Oldest, all[0].StoredAt)
	}

	from := all[len(before)].StoredAt
	to := all[len(before)+len(during)].StoredAt
	cases := []struct {
		name string
		f    bus.Filter
	}{
		{"no filter", bus.Filter{}},
		{"tenant", bus.Filter{Tenants: []string{tenantA}}},
		{"type", bus.Filter{Types: []string{typeB}}},
		{"tenant and type", bus.Filter{Tenants: []string{tenantA}, Types: []string{typeA}}},
		{"nothing matches", bus.Filter{Tenants: []string{"nobody"}}},
	}
	for _, c := range cases {
		var want []string
		for _, m := range during {
			if c.f.Match(m.Tenant, m.Type) {
				want = append(want, m.ID)
			}
		}
		got, res := e.replayAll(t, from, to, c.f)
		var ids []string
		for _, st := range got {
			ids = append(ids, st.ID)
			if st.StoredAt.Before(from) || !st.StoredAt.Before(to) {
				t.Errorf("%s: replayed %s stored at %s, outside [%s, %s)", c.name, st.ID, st.StoredAt, from, to)
			}
		}
		if diff := cmp.Diff(want, ids, msgOpts...); diff != "" {
			t.Errorf("%s: Replay of [%s, %s) (-want +got):\n%s", c.name, from, to, diff)
		}
		if res.Matched != len(want) {
			t.Errorf("%s: Matched = %d, want %d", c.name, res.Matched, len(want))
		}
	}

	// fn's error stops the replay and is returned.
	calls := 0
	_, err := e.b.Replay(t.Context(), e.start.Add(-time.Hour), time.Now().Add(time.Hour), bus.Filter{}, func(bus.Stored) error {
		calls++
		if calls == 2 {
			return errStop
		}
		return nil
	})
	if !errors.Is(err, errStop) || calls != 2 {
		t.Errorf("Replay with fn failing on the second message = %v after %d calls; want fn's error after 2", err, calls)
	}
}

// waitStats waits until consumer's stats are want.
func (e *env) waitStats(t *testing.T, consumer string, want bus.ConsumerStats) {
	t.Helper()
	var last bus.ConsumerStats
	var lastErr error
	eventually(t, fmt.Sprintf("stats %+v of consumer %s", want, consumer), func() bool {
		last, lastErr = e.b.ConsumerStats(t.Context(), consumer)
		return lastErr == nil && last == want
	}, func() string { return fmt.Sprintf("stats %+v, error %v", last, lastErr) })
}

// testConsumerStats: a consumer created and stopped counts what is published meanwhile as
// pending; an unknown consumer is errs.NotFound.
func testConsumerStats(t *testing.T, s *suite) {
	e := s.newEnv(t)
	if _, err := e.b.ConsumerStats(t.Context(), "nosuch"); !errs.Is(err, errs.NotFound) {
		t.Errorf("ConsumerStats of an unknown consumer = %v, want an errs.NotFound", err)
	}
	cfg := consumer("lagging")
	rec := newRecorder()
	stop(t, e.subscribe(t, cfg, rec.handler(nil)))
	msgs := e.msgs(tenantA, typeA, "lag", 3)
	e.publish(t, msgs...)
	e.waitStats(t, cfg.Name, bus.ConsumerStats{Pending: 3})

	e.subscribe(t, cfg, rec.handler(nil))
	rec.waitAll(t, "the pending messages", msgs[0].ID, msgs[1].ID, msgs[2].ID)
	e.waitStats(t, cfg.Name, bus.ConsumerStats{})
}

// testConsumerStatsFiltered: Pending counts the messages that match the consumer's filter only.
func testConsumerStatsFiltered(t *testing.T, s *suite) {
	e := s.newEnv(t)
	cfg := consumer("picky")
	cfg.Filter = bus.Filter{Tenants: []string{tenantA}}
	stop(t, e.subscribe(t, cfg, func(context.Context, bus.Delivery) error { return nil }))
	e.publish(t, e.msg(tenantB, typeA, "other-1"), e.msg(tenantA, typeA, "mine-1"), e.msg(tenantB, typeB, "other-2"),
		e.msg(tenantA, typeB, "mine-2"), e.msg(tenantA, typeA, "mine-3"))
	e.waitStats(t, cfg.Name, bus.ConsumerStats{Pending: 3})
}

// testPersistence: events, consumer positions and dead letters survive Close and reopening the
// namespace: the consumer receives exactly what it had not acknowledged.
func testPersistence(t *testing.T, s *suite) {
	if !s.f.Persistent {
		t.Skip("the adapter is not persistent")
	}
	e := s.newEnv(t)
	cfg := consumer("durable")
	done := e.msgs(tenantA, typeA, "done", 2)
	e.publish(t, done...)
	rec := newRecorder()
	sub := e.subscribe(t, cfg, rec.handler(nil))
	rec.waitAll(t, "the first messages", done[0].ID, done[1].ID)
	stop(t, sub)
	waiting := e.msgs(tenantA, typeA, "waiting", 3)
	e.publish(t, waiting...)
	dl := deadLetter(e.msg(tenantB, typeB, "dead"), "durable", time.Now().UTC().Truncate(time.Millisecond), "1")
	if err := e.b.AddDeadLetter(t.Context(), dl); err != nil {
		t.Fatalf("AddDeadLetter: %v", err)
	}
	if err := e.b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	e2 := &env{s: s, ns: e.ns, start: e.start}
	e2.b = s.openBus(t, e.ns)
	e2.waitStats(t, cfg.Name, bus.ConsumerStats{Pending: 3})
	if n, err := e2.b.CountDeadLetters(t.Context(), tenantB); err != nil || n != 1 {
		t.Errorf("after reopening, CountDeadLetters = %d, %v; want 1", n, err)
	}
	rec2 := newRecorder()
	e2.subscribe(t, cfg, rec2.handler(nil))
	rec2.waitAll(t, "the messages not acknowledged before Close", waiting[0].ID, waiting[1].ID, waiting[2].ID)
	e2.sentinel(t, tenantA, typeA, rec2)
	for _, m := range done {
		if n := rec2.count(m.ID); n != 0 {
			t.Errorf("%s, acknowledged before Close, was delivered again after reopening", m.ID)
		}
	}
	for _, m := range waiting {
		if n := rec2.count(m.ID); n != 1 {
			t.Errorf("%s delivered %d times after reopening, want 1", m.ID, n)
		}
	}
	all, _ := e2.replayAll(t, e.start.Add(-time.Hour), time.Now().Add(time.Hour), bus.Filter{})
	if len(all) != len(done)+len(waiting)+1 {
		t.Errorf("after reopening the stream holds %d messages, want %d", len(all), len(done)+len(waiting)+1)
	}
}
