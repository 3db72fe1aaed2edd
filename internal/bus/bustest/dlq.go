package bustest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/errs"
)

// deadLetter returns a dead letter of m in consumer, failed at failedAt, as Dispatch writes
// it.
func deadLetter(m bus.Message, consumer string, failedAt time.Time, source string) bus.DeadLetter {
	return bus.DeadLetter{
		ID: bus.DeadLetterID(consumer, m.ID), Message: m, Consumer: consumer,
		Reason: "failed in " + consumer, Attempts: 3,
		StoredAt: failedAt.Add(-time.Minute), FailedAt: failedAt, Source: source,
	}
}

// seedDLQ adds five dead letters over two tenants, two consumers and two types, failed a
// minute apart from base, in this order, and returns them.
func (e *env) seedDLQ(t *testing.T, base time.Time) []bus.DeadLetter {
	t.Helper()
	specs := []struct{ tenant, typ, consumer string }{
		{tenantA, typeA, "c1"},
		{tenantB, typeA, "c2"},
		{tenantA, typeB, "c2"},
		{tenantA, typeA, "c1"},
		{tenantB, typeB, "c1"},
	}
	var dls []bus.DeadLetter
	for i, sp := range specs {
		m := e.msg(sp.tenant, sp.typ, fmt.Sprintf("dead-%d", i))
		dl := deadLetter(m, sp.consumer, base.Add(time.Duration(i)*time.Minute), fmt.Sprint(100+i))
		if err := e.b.AddDeadLetter(t.Context(), dl); err != nil {
			t.Fatalf("AddDeadLetter(%d): %v", i, err)
		}
		dls = append(dls, dl)
	}
	return dls
}

// dlIDs returns the message ids of dls, in order.
func dlIDs(dls []bus.DeadLetter) []string {
	var out []string
	for _, dl := range dls {
		out = append(out, dl.Message.ID)
	}
	return out
}

// perTenant keeps the dead letters of tenant, in order. The DLQ is oldest first within a
// tenant; across tenants an adapter with a stream per tenant may interleave entries written in
// the same instant either way, so the suite checks order per tenant.
func perTenant(dls []bus.DeadLetter, tenant string) []string {
	var out []string
	for _, dl := range dls {
		if dl.Message.Tenant == tenant {
			out = append(out, dl.Message.ID)
		}
	}
	return out
}

// checkSameDeadLetters checks that got holds exactly want (in order per tenant), field by
// field, with distinct non-empty Positions.
func checkSameDeadLetters(t *testing.T, what string, got, want []bus.DeadLetter) {
	t.Helper()
	for _, tenant := range []string{tenantA, tenantB} {
		if diff := cmp.Diff(perTenant(want, tenant), perTenant(got, tenant)); diff != "" {
			t.Errorf("%s: dead letters of %s (-want +got):\n%s", what, tenant, diff)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%s: %d dead letters, want %d", what, len(got), len(want))
		return
	}
	byID := map[string]bus.DeadLetter{}
	for _, dl := range want {
		byID[dl.Message.ID] = dl
	}
	seen := map[string]bool{}
	for _, dl := range got {
		if diff := cmp.Diff(byID[dl.Message.ID], dl, dlOpts...); diff != "" {
			t.Errorf("%s: dead letter %s (-added +listed):\n%s", what, dl.Message.ID, diff)
		}
		if dl.Position == "" || seen[dl.Position] {
			t.Errorf("%s: dead letter %s has an empty or repeated Position %q", what, dl.Message.ID, dl.Position)
		}
		seen[dl.Position] = true
	}
}

// testDLQFilters: ListDeadLetters selects by tenant, consumer, type, ids and failure time.
func testDLQFilters(t *testing.T, s *suite) {
	e := s.newEnv(t)
	base := time.Now().UTC().Truncate(time.Millisecond).Add(-time.Hour)
	dls := e.seedDLQ(t, base)
	pick := func(idx ...int) []bus.DeadLetter {
		var out []bus.DeadLetter
		for _, i := range idx {
			out = append(out, dls[i])
		}
		return out
	}
	cases := []struct {
		name string
		f    bus.DLQFilter
		want []bus.DeadLetter
	}{
		{"all", bus.DLQFilter{}, dls},
		{"tenant", bus.DLQFilter{Tenant: tenantA}, pick(0, 2, 3)},
		{"consumer", bus.DLQFilter{Consumer: "c2"}, pick(1, 2)},
		{"type", bus.DLQFilter{Type: typeB}, pick(2, 4)},
		{"ids", bus.DLQFilter{IDs: []string{dls[1].ID, dls[4].ID}}, pick(1, 4)},
		{"since", bus.DLQFilter{Since: base.Add(3 * time.Minute)}, pick(3, 4)},
		{"until", bus.DLQFilter{Until: base.Add(time.Minute)}, pick(0)},
		{"since until", bus.DLQFilter{Since: base.Add(time.Minute), Until: base.Add(3 * time.Minute)}, pick(1, 2)},
		{"tenant and consumer", bus.DLQFilter{Tenant: tenantA, Consumer: "c1"}, pick(0, 3)},
		{"tenant, type and time", bus.DLQFilter{Tenant: tenantB, Type: typeB, Since: base}, pick(4)},
		{"unknown tenant", bus.DLQFilter{Tenant: "nobody"}, nil},
		{"unknown id", bus.DLQFilter{IDs: []string{"dlq_0"}}, nil},
	}
	for _, c := range cases {
		got := e.listAll(t, c.f, 100)
		checkSameDeadLetters(t, c.name, got, c.want)
		for _, dl := range got {
			if !c.f.Match(dl) {
				t.Errorf("%s: listed %s, which the filter does not match", c.name, dl.Message.ID)
			}
		}
	}
}

// testDLQPagination: pages chain through the cursor, with no entry twice and none missing.
func testDLQPagination(t *testing.T, s *suite) {
	e := s.newEnv(t)
	base := time.Now().UTC().Truncate(time.Millisecond).Add(-time.Hour)
	dls := e.seedDLQ(t, base)
	got := e.listAll(t, bus.DLQFilter{}, 2)
	checkSameDeadLetters(t, "limit 2 over 5", got, dls)

	first, next, err := e.b.ListDeadLetters(t.Context(), bus.DLQFilter{}, "", 2)
	if err != nil {
		t.Fatalf("ListDeadLetters: %v", err)
	}
	if len(first) != 2 || next == "" {
		t.Errorf("first page of 2 over 5: %d entries, next cursor %q; want 2 and a cursor", len(first), next)
	}
	var tenantA3 []bus.DeadLetter
	for _, dl := range dls {
		if dl.Message.Tenant == tenantA {
			tenantA3 = append(tenantA3, dl)
		}
	}
	for _, limit := range []int{1, 2, 3, 100} {
		got := e.listAll(t, bus.DLQFilter{Tenant: tenantA}, limit)
		checkSameDeadLetters(t, fmt.Sprintf("tenant filter, limit %d", limit), got, tenantA3)
	}
	all, next, err := e.b.ListDeadLetters(t.Context(), bus.DLQFilter{}, "", 5)
	if err != nil {
		t.Fatalf("ListDeadLetters: %v", err)
	}
	if len(all) != 5 {
		t.Errorf("ListDeadLetters(limit 5) over 5 = %d entries", len(all))
	}
	if next != "" {
		rest, _, err := e.b.ListDeadLetters(t.Context(), bus.DLQFilter{}, next, 5)
		if err != nil || len(rest) != 0 {
			t.Errorf("the page after the last = %d entries, %v; want none", len(rest), err)
		}
	}
}

// testDLQInvalidList: a malformed cursor or a limit below 1 is an errs.Invalid.
func testDLQInvalidList(t *testing.T, s *suite) {
	e := s.newEnv(t)
	e.seedDLQ(t, time.Now().UTC().Add(-time.Hour))
	for _, cursor := range []string{"%%%", "not a cursor", "-1", "\x00"} {
		if _, _, err := e.b.ListDeadLetters(t.Context(), bus.DLQFilter{}, cursor, 2); !errs.Is(err, errs.Invalid) {
			t.Errorf("ListDeadLetters with cursor %q = %v, want an errs.Invalid", cursor, err)
		}
	}
	for _, limit := range []int{0, -1} {
		if _, _, err := e.b.ListDeadLetters(t.Context(), bus.DLQFilter{}, "", limit); !errs.Is(err, errs.Invalid) {
			t.Errorf("ListDeadLetters with limit %d = %v, want an errs.Invalid", limit, err)
		}
	}
}

// testDLQRemoveAndCount: RemoveDeadLetters removes exactly the given ones; counts follow.
func testDLQRemoveAndCount(t *testing.T, s *suite) {
	e := s.newEnv(t)
	e.seedDLQ(t, time.Now().UTC().Truncate(time.Millisecond).Add(-time.Hour))
	count := func(tenant string, want int64) {
		t.Helper()
		if n, err := e.b.CountDeadLetters(t.Context(), tenant); err != nil || n != want {
			t.Errorf("CountDeadLetters(%q) = %d, %v; want %d", tenant, n, err, want)
		}
	}
	count("", 5)
	count(tenantA, 3)
	count(tenantB, 2)
	count("nobody", 0)

	listed := e.listAll(t, bus.DLQFilter{}, 100)
	var remove, keep []bus.DeadLetter
	for _, dl := range listed {
		if dl.Message.ID == e.id("dead-1") || dl.Message.ID == e.id("dead-3") {
			remove = append(remove, dl)
		} else {
			keep = append(keep, dl)
		}
	}
	if len(remove) != 2 {
		t.Fatalf("listed %v; want dead-1 and dead-3 among them", dlIDs(listed))
	}
	if err := e.b.RemoveDeadLetters(t.Context(), remove); err != nil {
		t.Fatalf("RemoveDeadLetters: %v", err)
	}
	left := e.listAll(t, bus.DLQFilter{}, 100)
	if diff := cmp.Diff(keep, left, dlOpts...); diff != "" {
		t.Errorf("after removing two, the DLQ (-want +got):\n%s", diff)
	}
	count("", 3)
	count(tenantA, 2)
	count(tenantB, 1)
	// Removing them again, or nothing, is no error and removes nothing else.
	if err := e.b.RemoveDeadLetters(t.Context(), remove); err != nil {
		t.Errorf("RemoveDeadLetters of removed entries: %v", err)
	}
	if err := e.b.RemoveDeadLetters(t.Context(), nil); err != nil {
		t.Errorf("RemoveDeadLetters(nil): %v", err)
	}
	count("", 3)
}

// testDLQAddDedup: the same dead letter (ID and Source) written twice is one entry; the same
// ID from another Source (the event failing again after a reprocessing) is a new one.
func testDLQAddDedup(t *testing.T, s *suite) {
	e := s.newEnv(t)
	m := e.msg(tenantA, typeA, "twice")
	at := time.Now().UTC().Truncate(time.Millisecond)
	dl := deadLetter(m, "c1", at, "7")
	for range 2 {
		if err := e.b.AddDeadLetter(t.Context(), dl); err != nil {
			t.Fatalf("AddDeadLetter: %v", err)
		}
	}
	if n, err := e.b.CountDeadLetters(t.Context(), tenantA); err != nil || n != 1 {
		t.Errorf("after adding one dead letter twice, CountDeadLetters = %d, %v; want 1", n, err)
	}
	again := dl
	again.Source = "12"
	again.FailedAt = at.Add(time.Second)
	if err := e.b.AddDeadLetter(t.Context(), again); err != nil {
		t.Fatalf("AddDeadLetter from a new source: %v", err)
	}
	got := e.listAll(t, bus.DLQFilter{Tenant: tenantA}, 10)
	if diff := cmp.Diff([]bus.DeadLetter{dl, again}, got, dlOpts...); diff != "" {
		t.Errorf("the DLQ after a failure from a new source (-want +got):\n%s", diff)
	}
	if len(got) == 2 && got[0].Position == got[1].Position {
		t.Errorf("two dead letters share Position %q", got[0].Position)
	}
}

// testReprocessing: the DLQ reprocessing flow. A dead letter redelivered (Redeliver with
// "reprocess:"+Position, then RemoveDeadLetters) reaches the fixed handler as a new message
// (Attempt 1) and leaves the DLQ empty; the same redelivery repeated within the dedup window is
// not delivered again; a redelivered message failing again is dead-lettered again as a new
// entry.
func testReprocessing(t *testing.T, s *suite) {
	e := s.newEnv(t)
	m := e.msg(tenantA, typeA, "reprocess")
	var fixed atomic.Bool
	rec := newRecorder()
	cfg := consumer("repairable")
	cfg.MaxDeliveries = 2
	e.subscribe(t, cfg, rec.handler(func(_ context.Context, d bus.Delivery, _ int) error {
		if d.ID == m.ID && !fixed.Load() {
			return errors.New("bug-4711")
		}
		return nil
	}))
	e.publish(t, m)
	e.waitDLQCount(t, tenantA, 1)
	first := e.listAll(t, bus.DLQFilter{}, 10)
	if len(first) != 1 {
		t.Fatalf("DLQ holds %d entries after the first failure, want 1", len(first))
	}

	// Redelivered while still broken: dead-lettered again, as a new entry.
	if err := e.b.Redeliver(t.Context(), cfg.Name, first[0].Message, "retry-broken:"+first[0].Position); err != nil {
		t.Fatalf("Redeliver: %v", err)
	}
	e.waitDLQCount(t, tenantA, 2)
	both := e.listAll(t, bus.DLQFilter{}, 10)
	if len(both) != 2 || both[0].ID != both[1].ID || both[0].Position == both[1].Position || both[0].Source == both[1].Source {
		t.Fatalf("after a redelivery failed again, the DLQ = %+v; want two entries of the same ID from different sources", both)
	}
	if got := rec.attempts(m.ID); !slices.Equal(got, []int{1, 2, 1, 2}) {
		t.Errorf("attempts of the original and the failing redelivery = %v, want [1 2 1 2]", got)
	}

	// Fixed: reprocess the newest entry, remove both.
	fixed.Store(true)
	dl := both[1]
	key := "reprocess:" + dl.Position
	if err := e.b.Redeliver(t.Context(), dl.Consumer, dl.Message, key); err != nil {
		t.Fatalf("Redeliver: %v", err)
	}
	if err := e.b.RemoveDeadLetters(t.Context(), both); err != nil {
		t.Fatalf("RemoveDeadLetters: %v", err)
	}
	rec.waitCalls(t, m.ID, 5)
	if d := rec.of(m.ID)[4]; d.Attempt != 1 {
		t.Errorf("the reprocessed message has Attempt %d, want 1 (a new message)", d.Attempt)
	}
	if diff := cmp.Diff(m, rec.of(m.ID)[4].Message, msgOpts...); diff != "" {
		t.Errorf("the reprocessed message differs (-published +redelivered):\n%s", diff)
	}
	e.waitDLQCount(t, "", 0)

	// The same reprocessing request again within the dedup window: not delivered again.
	if err := e.b.Redeliver(t.Context(), dl.Consumer, dl.Message, key); err != nil {
		t.Fatalf("Redeliver again: %v", err)
	}
	// A redelivery with a new key, after it on the same retry path, proves the first was
	// skipped rather than still on its way.
	marker := e.msg(tenantA, typeA, "marker")
	if err := e.b.Redeliver(t.Context(), cfg.Name, marker, "marker-key"); err != nil {
		t.Fatalf("Redeliver marker: %v", err)
	}
	rec.waitAll(t, "the marker redelivery", marker.ID)
	e.sentinel(t, tenantA, typeA, rec)
	e.settled(t, cfg.Name)
	if n := rec.count(m.ID); n != 5 {
		t.Errorf("the message was handed over %d times, want 5 (2 failed, 2 failed again, 1 reprocessed): a repeated reprocessing request was delivered again", n)
	}
	if n, err := e.b.CountDeadLetters(t.Context(), ""); err != nil || n != 0 {
		t.Errorf("after reprocessing, CountDeadLetters = %d, %v; want 0", n, err)
	}
	// Redeliveries go to one consumer; they are not events: a replay of the stream holds the
	// event once.
	replayed, _ := e.replayAll(t, e.start.Add(-time.Hour), time.Now().Add(time.Hour), bus.Filter{})
	n := 0
	for _, st := range replayed {
		if st.ID == m.ID || st.ID == marker.ID {
			n++
		}
	}
	if n != 1 {
		t.Errorf("Replay holds the event and its redeliveries %d times, want 1 (redeliveries are not events)", n)
	}
}

// testInvalidRedeliver: a redelivery to an invalid consumer name (which would make an unsafe
// subject or key) or of an invalid message is an errs.Invalid.
func testInvalidRedeliver(t *testing.T, s *suite) {
	e := s.newEnv(t)
	m := e.msg(tenantA, typeA, "redo")
	bad := m
	bad.Type = "Nope"
	cases := []struct {
		name, consumer, key string
		m                   bus.Message
	}{
		{"consumer with a dot", "a.b", "k", m},
		{"consumer wildcard", ">", "k", m},
		{"empty consumer", "", "k", m},
		{"invalid message", "c1", "k", bad},
	}
	for _, c := range cases {
		if err := e.b.Redeliver(t.Context(), c.consumer, c.m, c.key); !errs.Is(err, errs.Invalid) {
			t.Errorf("Redeliver with %s = %v, want an errs.Invalid", c.name, err)
		}
	}
}

// testRedeliverOneConsumer: a redelivery goes to the named consumer only, whatever its filter,
// never to another consumer of the stream.
func testRedeliverOneConsumer(t *testing.T, s *suite) {
	e := s.newEnv(t)
	recA, recB := newRecorder(), newRecorder()
	cfgA := consumer("alpha")
	cfgA.Filter = bus.Filter{Tenants: []string{tenantB}} // redeliveries bypass the filter
	e.subscribe(t, cfgA, recA.handler(nil))
	e.subscribe(t, consumer("beta"), recB.handler(nil))
	m := e.msg(tenantA, typeA, "once-more")
	e.publish(t, m)
	recB.waitAll(t, "the message on beta", m.ID)

	if err := e.b.Redeliver(t.Context(), "alpha", m, "to-alpha"); err != nil {
		t.Fatalf("Redeliver: %v", err)
	}
	recA.waitAll(t, "the redelivery on alpha", m.ID)
	d := recA.of(m.ID)[0]
	if d.Attempt != 1 || d.Consumer != "alpha" {
		t.Errorf("redelivery: Attempt %d, Consumer %q; want 1, alpha", d.Attempt, d.Consumer)
	}
	if diff := cmp.Diff(m, d.Message, msgOpts...); diff != "" {
		t.Errorf("redelivered message differs (-published +redelivered):\n%s", diff)
	}
	e.sentinel(t, tenantB, typeA, recA, recB)
	// Another redelivery to alpha after the first, so beta had every chance to see the first.
	marker := e.msg(tenantA, typeB, "marker")
	if err := e.b.Redeliver(t.Context(), "alpha", marker, "to-alpha-2"); err != nil {
		t.Fatalf("Redeliver: %v", err)
	}
	recA.waitAll(t, "the second redelivery on alpha", marker.ID)
	e.sentinel(t, tenantB, typeA, recB)
	if n := recB.count(m.ID); n != 1 {
		t.Errorf("beta handled the message %d times, want 1: a redelivery to alpha reached beta", n)
	}
	if n := recB.count(marker.ID); n != 0 {
		t.Errorf("beta handled a redelivery meant for alpha")
	}
	if n := recA.count(m.ID); n != 1 {
		t.Errorf("alpha handled the redelivered message %d times, want 1", n)
	}
}
