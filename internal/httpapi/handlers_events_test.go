package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/consumers"
	"github.com/nops-kernel/nops/internal/control"
	"github.com/nops-kernel/nops/internal/errs"
)

// memBus is the part of the bus contract the event endpoints use, in memory: dead letters in
// position order with "after position" cursors, an event stream, redeliveries deduplicated on
// their key as the broker does. The real adapters pass the bus conformance suite; these tests are
// about the endpoints: tenancy, selection, pacing, audit.
type memBus struct {
	mu       sync.Mutex
	seq      int
	dlq      []bus.DeadLetter
	stream   []bus.Stored
	sent     []redelivery // redeliveries the broker stored (repeats of a dedup key dropped)
	keys     map[string]bool
	failFrom int // Redeliver fails from this redelivery on (1-based); 0 never
	calls    int
	// onRedeliver runs after a stored redelivery, with the lock released: a consumer failing the
	// event again adds a dead letter.
	onRedeliver func(consumer string, m bus.Message)
	stats       map[string]bus.ConsumerStats
}

type redelivery struct {
	Consumer, EventID, Key string
}

func newMemBus() *memBus {
	return &memBus{keys: map[string]bool{}, stats: map[string]bus.ConsumerStats{}}
}

func payloadOf(id, tenant, typ string) []byte {
	return []byte(fmt.Sprintf(`{"specversion":"1.0","id":%q,"source":"/tenants/%s","type":%q,"tenant":%q,"data":{"n":12345678901234567890}}`, id, tenant, typ, tenant))
}

// deadLetter adds a dead letter of event id, failed at failedAt.
func (b *memBus) deadLetter(tenant, consumer, id, typ string, failedAt time.Time) bus.DeadLetter {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seq++
	dl := bus.DeadLetter{
		ID:       bus.DeadLetterID(consumer, id),
		Message:  bus.Message{ID: id, Tenant: tenant, Type: typ, Payload: payloadOf(id, tenant, typ)},
		Consumer: consumer, Reason: "boom: " + id, Attempts: 5,
		StoredAt: failedAt.Add(-time.Minute), FailedAt: failedAt,
		Source: "src-" + strconv.Itoa(b.seq), Position: strconv.Itoa(b.seq),
	}
	b.dlq = append(b.dlq, dl)
	return dl
}

// event appends an event to the stream, stored at at.
func (b *memBus) event(tenant, id, typ string, at time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seq++
	b.stream = append(b.stream, bus.Stored{Message: bus.Message{ID: id, Tenant: tenant, Type: typ, Payload: payloadOf(id, tenant, typ)},
		Position: strconv.Itoa(b.seq), StoredAt: at})
}

func (b *memBus) ListDeadLetters(_ context.Context, f bus.DLQFilter, after string, limit int) ([]bus.DeadLetter, string, error) {
	if limit < 1 {
		return nil, "", errs.Field("limit", "must be at least 1")
	}
	from := 0
	if after != "" {
		n, err := strconv.Atoi(after)
		if err != nil || n < 0 {
			return nil, "", errs.Field("after", "malformed cursor")
		}
		from = n
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []bus.DeadLetter
	for _, dl := range b.dlq {
		pos, _ := strconv.Atoi(dl.Position)
		if pos <= from || !f.Match(dl) {
			continue
		}
		if len(out) == limit {
			return out, out[len(out)-1].Position, nil
		}
		out = append(out, dl)
	}
	return out, "", nil
}

func (b *memBus) RemoveDeadLetters(_ context.Context, dls []bus.DeadLetter) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.dlq = slices.DeleteFunc(b.dlq, func(d bus.DeadLetter) bool {
		return slices.ContainsFunc(dls, func(r bus.DeadLetter) bool { return r.Position == d.Position })
	})
	return nil
}

func (b *memBus) CountDeadLetters(_ context.Context, tenant string) (int64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var n int64
	for _, dl := range b.dlq {
		if tenant == "" || dl.Message.Tenant == tenant {
			n++
		}
	}
	return n, nil
}

func (b *memBus) Redeliver(_ context.Context, consumer string, m bus.Message, key string) error {
	b.mu.Lock()
	b.calls++
	if b.failFrom > 0 && b.calls >= b.failFrom {
		b.mu.Unlock()
		return errs.Wrap(errs.Unavailable, errors.New("injected: broker down"), "the event bus is unavailable")
	}
	if b.keys[key] {
		b.mu.Unlock()
		return nil
	}
	b.keys[key] = true
	b.sent = append(b.sent, redelivery{consumer, m.ID, key})
	hook := b.onRedeliver
	b.mu.Unlock()
	if hook != nil {
		hook(consumer, m)
	}
	return nil
}

func (b *memBus) Replay(_ context.Context, from, to time.Time, f bus.Filter, fn func(bus.Stored) error) (bus.ReplayResult, error) {
	b.mu.Lock()
	stream := slices.Clone(b.stream)
	b.mu.Unlock()
	var res bus.ReplayResult
	if len(stream) > 0 {
		res.Oldest = stream[0].StoredAt
	}
	for _, m := range stream {
		if m.StoredAt.Before(from) || !m.StoredAt.Before(to) || !f.Match(m.Tenant, m.Type) {
			continue
		}
		res.Matched++
		if err := fn(m); err != nil {
			return res, err
		}
	}
	return res, nil
}

func (b *memBus) ConsumerStats(_ context.Context, consumer string) (bus.ConsumerStats, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	st, ok := b.stats[consumer]
	if !ok {
		return bus.ConsumerStats{}, errs.New(errs.NotFound, "no consumer %s", consumer)
	}
	return st, nil
}

func (b *memBus) dlqIDs() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, dl := range b.dlq {
		out = append(out, dl.ID)
	}
	return out
}

func (b *memBus) redeliveries() []redelivery {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.sent)
}

const (
	typeRegistered = "nops.agent.registered.v1"
	typeHeartbeat  = "nops.agent.heartbeat.v1"
)

// eventsWorld is the API with a memBus, two tenants and keys of each role in the first.
type eventsWorld struct {
	*flow
	bus        *memBus
	admin      string            // SUPER_ADMIN bearer
	a, b       string            // tenant ids
	keys       map[string]string // role → credential in tenant a
	otherAdmin string            // ADMIN credential in tenant b
}

func newEventsWorld(t *testing.T, mutate func(*Deps)) *eventsWorld {
	t.Helper()
	deps, st, signer := newFlowDeps(t)
	mb := newMemBus()
	deps.Bus = mb
	deps.Consumers = []string{"event-stats", "heartbeats"}
	if mutate != nil {
		mutate(&deps)
	}
	h, err := NewHandler(deps)
	if err != nil {
		t.Fatal(err)
	}
	contract, err := NewContract()
	if err != nil {
		t.Fatal(err)
	}
	w := &eventsWorld{flow: &flow{t: t, h: h, contract: contract, st: st, signer: signer}, bus: mb, keys: map[string]string{}}
	w.admin = w.login(map[string]any{"username": "admin", "password": flowAdminPassword})
	_, ta := w.must(201, "POST", "/v1/tenants", w.admin, map[string]any{"name": "acme"})
	_, tb := w.must(201, "POST", "/v1/tenants", w.admin, map[string]any{"name": "globex"})
	w.a, w.b = ta["id"].(string), tb["id"].(string)
	for _, role := range []string{"ADMIN", "OPERATOR", "VIEWER"} {
		_, k := w.must(201, "POST", "/v1/api-keys?tenant="+w.a, w.admin, map[string]any{"name": strings.ToLower(role), "role": role})
		w.keys[role] = "key:" + k["secret"].(string)
	}
	_, k := w.must(201, "POST", "/v1/api-keys?tenant="+w.b, w.admin, map[string]any{"name": "admin", "role": "ADMIN"})
	w.otherAdmin = "key:" + k["secret"].(string)
	return w
}

func itemIDs(list map[string]any, field string) []string {
	var out []string
	for _, it := range list["items"].([]any) {
		out = append(out, it.(map[string]any)[field].(string))
	}
	return out
}

func strs(v any) []string {
	var out []string
	for _, s := range v.([]any) {
		out = append(out, s.(string))
	}
	return out
}

// auditOf returns the reasons of the records of action in the tree the credential reads.
func (w *eventsWorld) auditOf(cred, action string) []string {
	w.t.Helper()
	_, page := w.must(200, "GET", "/v1/audit?limit=500&action="+action, cred, nil)
	var out []string
	for _, it := range page["items"].([]any) {
		out = append(out, it.(map[string]any)["decision"].(map[string]any)["reason"].(string))
	}
	return out
}

func TestListDeadLettersTenancyFiltersAndPages(t *testing.T) {
	w := newEventsWorld(t, nil)
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	a1 := w.bus.deadLetter(w.a, "event-stats", "evt_a1", typeRegistered, t0)
	a2 := w.bus.deadLetter(w.a, "heartbeats", "evt_a2", typeHeartbeat, t0.Add(time.Hour))
	b1 := w.bus.deadLetter(w.b, "event-stats", "evt_b1", typeRegistered, t0.Add(2*time.Hour))
	a3 := w.bus.deadLetter(w.a, "event-stats", "evt_a3", typeRegistered, t0.Add(3*time.Hour))
	w.bus.mu.Lock()
	w.bus.dlq[3].Message.Payload = []byte("not json \x00")
	w.bus.mu.Unlock()

	// A tenant's reader sees its own, oldest first, whoever else has dead letters.
	_, list := w.must(200, "GET", "/v1/dlq", w.keys["OPERATOR"], nil)
	if diff := cmp.Diff([]string{a1.ID, a2.ID, a3.ID}, itemIDs(list, "id")); diff != "" {
		t.Fatalf("tenant A's list (-want +got):\n%s", diff)
	}
	first := list["items"].([]any)[0].(map[string]any)
	if first["tenant"] != w.a || first["consumer"] != "event-stats" || first["event_id"] != "evt_a1" || first["event_type"] != typeRegistered ||
		first["reason"] != "boom: evt_a1" || first["attempts"] != float64(5) || first["failed_at"] != "2026-03-01T00:00:00Z" {
		t.Fatalf("dead letter %v", first)
	}
	if ev := first["event"].(map[string]any); ev["id"] != "evt_a1" || ev["data"].(map[string]any)["n"] != 12345678901234567890.0 {
		t.Fatalf("event %v", ev)
	}
	if _, ok := list["items"].([]any)[2].(map[string]any)["payload_base64"]; !ok {
		t.Fatalf("a payload that is no JSON object is not shown as base64: %v", list["items"].([]any)[2])
	}
	_, list = w.must(200, "GET", "/v1/dlq", w.otherAdmin, nil)
	if diff := cmp.Diff([]string{b1.ID}, itemIDs(list, "id")); diff != "" {
		t.Fatalf("tenant B's list (-want +got):\n%s", diff)
	}
	// Naming another tenant is "not found"; a VIEWER may not read the DLQ.
	w.must(404, "GET", "/v1/dlq?tenant="+w.b, w.keys["ADMIN"], nil)
	w.must(403, "GET", "/v1/dlq", w.keys["VIEWER"], nil)
	// SUPER_ADMIN: every tenant, or one.
	_, list = w.must(200, "GET", "/v1/dlq", w.admin, nil)
	if len(list["items"].([]any)) != 4 {
		t.Fatalf("SUPER_ADMIN list %v", list)
	}
	_, list = w.must(200, "GET", "/v1/dlq?tenant="+w.b, w.admin, nil)
	if diff := cmp.Diff([]string{b1.ID}, itemIDs(list, "id")); diff != "" {
		t.Fatalf("SUPER_ADMIN list of B (-want +got):\n%s", diff)
	}

	// Filters.
	for q, want := range map[string][]string{
		"consumer=heartbeats":        {a2.ID},
		"type=" + typeRegistered:     {a1.ID, a3.ID},
		"since=2026-03-01T01:00:00Z": {a2.ID, a3.ID},
		"until=2026-03-01T01:00:00Z": {a1.ID},
		"since=2026-03-01T00:30:00Z&until=2026-03-01T03:00:00Z&consumer=heartbeats": {a2.ID},
	} {
		_, list := w.must(200, "GET", "/v1/dlq?"+q, w.keys["ADMIN"], nil)
		if diff := cmp.Diff(want, itemIDs(list, "id")); diff != "" {
			t.Errorf("%s (-want +got):\n%s", q, diff)
		}
	}
	for q, field := range map[string]string{
		"since=2026-03-01T01:00:00Z&until=2026-03-01T01:00:00Z": "query.until",
		"cursor=not-a-cursor":   "query.cursor",
		"consumer=no%20spaces":  "query.consumer",
		"type=agent.registered": "query.type",
	} {
		_, bad := w.must(400, "GET", "/v1/dlq?"+q, w.keys["ADMIN"], nil)
		if names := fieldNames(bad); !slices.Contains(names, field) {
			t.Errorf("%s: fields %v, want %s", q, names, field)
		}
	}

	// A time the generated parameter binding cannot parse is refused before the contract check,
	// without naming the parameter (the binding's errors are not mapped to fields yet).
	w.must(400, "GET", "/v1/dlq?since=yesterday", w.keys["ADMIN"], nil)

	// Pages of one, through the cursor.
	var paged []string
	cursor := ""
	for range 10 {
		_, page := w.must(200, "GET", "/v1/dlq?limit=1&cursor="+url.QueryEscape(cursor), w.keys["ADMIN"], nil)
		paged = append(paged, itemIDs(page, "id")...)
		next, _ := page["next_cursor"].(string)
		if next == "" {
			break
		}
		cursor = next
	}
	if diff := cmp.Diff([]string{a1.ID, a2.ID, a3.ID}, paged); diff != "" {
		t.Fatalf("paged (-want +got):\n%s", diff)
	}
}

// TestListDeadLettersPageOfLargeEventsIsCut: a page stops growing past 8 MiB of events, and the
// cursor continues right after it.
func TestListDeadLettersPageOfLargeEventsIsCut(t *testing.T) {
	w := newEventsWorld(t, nil)
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	var want []string
	for i := range 20 {
		dl := w.bus.deadLetter(w.a, "event-stats", fmt.Sprintf("evt_%d", i), typeRegistered, t0)
		want = append(want, dl.ID)
	}
	w.bus.mu.Lock()
	for i := range w.bus.dlq {
		w.bus.dlq[i].Message.Payload = []byte(`{"pad":"` + strings.Repeat("x", 600<<10) + `"}`)
	}
	w.bus.mu.Unlock()
	_, page := w.must(200, "GET", "/v1/dlq?limit=500", w.keys["ADMIN"], nil)
	first := itemIDs(page, "id")
	cursor, _ := page["next_cursor"].(string)
	if len(first) >= 20 || cursor == "" {
		t.Fatalf("a page of 12 MiB of events was not cut: %d items, cursor %q", len(first), cursor)
	}
	_, page = w.must(200, "GET", "/v1/dlq?limit=500&cursor="+url.QueryEscape(cursor), w.keys["ADMIN"], nil)
	if diff := cmp.Diff(want, append(first, itemIDs(page, "id")...)); diff != "" || page["next_cursor"] != nil {
		t.Fatalf("two pages (-want +got):\n%s\nnext cursor %v", diff, page["next_cursor"])
	}
}

func TestReprocessByIDsDryRunThenForReal(t *testing.T) {
	w := newEventsWorld(t, nil)
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	a1 := w.bus.deadLetter(w.a, "event-stats", "evt_a1", typeRegistered, t0)
	a2 := w.bus.deadLetter(w.a, "heartbeats", "evt_a2", typeHeartbeat, t0)
	a3 := w.bus.deadLetter(w.a, "event-stats", "evt_a3", typeRegistered, t0)
	b1 := w.bus.deadLetter(w.b, "event-stats", "evt_b1", typeRegistered, t0)
	before := w.bus.dlqIDs()

	body := map[string]any{"ids": []string{a1.ID, a2.ID, b1.ID}, "dry_run": true}
	_, res := w.must(200, "POST", "/v1/dlq/reprocess", w.keys["ADMIN"], body, "Idempotency-Key", `"k-1"`)
	if res["dry_run"] != true || res["matched"] != float64(2) || res["reprocessed"] != float64(0) || res["remaining"] != float64(2) {
		t.Fatalf("dry run %v", res)
	}
	if diff := cmp.Diff([]string{a1.ID, a2.ID}, strs(res["ids"])); diff != "" {
		t.Fatalf("dry run ids (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(before, w.bus.dlqIDs()); diff != "" || len(w.bus.redeliveries()) != 0 {
		t.Fatalf("a dry run changed the DLQ (%s) or redelivered %v", diff, w.bus.redeliveries())
	}

	body["dry_run"] = false
	_, res = w.must(200, "POST", "/v1/dlq/reprocess", w.keys["ADMIN"], body)
	if res["dry_run"] != false || res["matched"] != float64(2) || res["reprocessed"] != float64(2) || res["remaining"] != float64(0) {
		t.Fatalf("reprocess %v", res)
	}
	want := []redelivery{
		{"event-stats", "evt_a1", "reprocess:" + a1.Position},
		{"heartbeats", "evt_a2", "reprocess:" + a2.Position},
	}
	if diff := cmp.Diff(want, w.bus.redeliveries()); diff != "" {
		t.Fatalf("redeliveries (-want +got):\n%s", diff)
	}
	// Tenant B's entry, named by A, is untouched; A's others too.
	if diff := cmp.Diff([]string{a3.ID, b1.ID}, w.bus.dlqIDs()); diff != "" {
		t.Fatalf("DLQ after (-want +got):\n%s", diff)
	}
	// Repeating the call finds nothing more to do.
	_, res = w.must(200, "POST", "/v1/dlq/reprocess", w.keys["ADMIN"], body)
	if res["matched"] != float64(0) || res["reprocessed"] != float64(0) || len(res["ids"].([]any)) != 0 {
		t.Fatalf("repeat %v", res)
	}

	reasons := w.auditOf(w.keys["ADMIN"], control.ActionDLQReprocessDryRun)
	if len(reasons) != 1 || !strings.Contains(reasons[0], "by 3 ids: matched 2, reprocessed 0, remaining 2") || !strings.Contains(reasons[0], a1.ID) {
		t.Fatalf("dry run audit %q", reasons)
	}
	reasons = w.auditOf(w.keys["ADMIN"], control.ActionDLQReprocess)
	if len(reasons) != 2 || !strings.Contains(reasons[0], "matched 2, reprocessed 2, remaining 0; ids: "+a1.ID+", "+a2.ID) {
		t.Fatalf("reprocess audit %q", reasons)
	}
	if got := w.auditOf(w.otherAdmin, control.ActionDLQReprocess); len(got) != 0 {
		t.Fatalf("tenant B's log records A's reprocessing: %q", got)
	}
	// Operators read the DLQ but may not reprocess.
	w.must(403, "POST", "/v1/dlq/reprocess", w.keys["OPERATOR"], body)
}

func TestReprocessSelectionIsExactlyOne(t *testing.T) {
	w := newEventsWorld(t, nil)
	tests := []struct {
		body   map[string]any
		fields []string
	}{
		{map[string]any{}, []string{"body"}},
		{map[string]any{"dry_run": true}, []string{"body"}},
		{map[string]any{"ids": []string{bus.DeadLetterID("c", "e")}, "all": true}, []string{"body.all"}},
		{map[string]any{"ids": []string{bus.DeadLetterID("c", "e")}, "filter": map[string]any{"consumer": "c"}, "all": true}, []string{"body.filter", "body.all"}},
		{map[string]any{"all": false}, []string{"body.all"}},
		{map[string]any{"filter": map[string]any{}}, []string{"body.filter"}},
		{map[string]any{"filter": map[string]any{"since": "2026-03-02T00:00:00Z", "until": "2026-03-01T00:00:00Z"}}, []string{"body.filter.until"}},
		{map[string]any{"filter": map[string]any{"tenant": "x"}}, []string{"body.filter"}}, // property "tenant" is unsupported
		{map[string]any{"ids": []string{}}, []string{"body.ids"}},
		{map[string]any{"ids": []string{"agt_1"}}, []string{"body.ids.0"}},
		{map[string]any{"all": true, "limit": 5001}, []string{"body.limit"}},
		{map[string]any{"all": true, "rate": 0}, []string{"body.rate"}},
		{map[string]any{"all": true, "payload": "x"}, []string{"body"}},
		{map[string]any{"filter": map[string]any{"since": "yesterday"}}, []string{"body.filter.since"}},
	}
	for _, tt := range tests {
		_, bad := w.must(400, "POST", "/v1/dlq/reprocess", w.keys["ADMIN"], tt.body)
		if diff := cmp.Diff(tt.fields, fieldNames(bad)); diff != "" {
			t.Errorf("%v: fields (-want +got):\n%s", tt.body, diff)
		}
	}
	if len(w.auditOf(w.keys["ADMIN"], control.ActionDLQReprocess)) != 0 {
		t.Fatal("a refused request was recorded as a reprocessing")
	}
}

func TestReprocessAllByFilterLimitAndEveryTenant(t *testing.T) {
	w := newEventsWorld(t, nil)
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	for i := range 5 {
		w.bus.deadLetter(w.a, "event-stats", fmt.Sprintf("evt_a%d", i), typeRegistered, t0.Add(time.Duration(i)*time.Hour))
	}
	hb := w.bus.deadLetter(w.a, "heartbeats", "evt_hb", typeHeartbeat, t0)
	b1 := w.bus.deadLetter(w.b, "event-stats", "evt_b1", typeRegistered, t0)

	// By filter, two per call: remaining counts what still matches the filter.
	filter := map[string]any{"filter": map[string]any{"consumer": "event-stats", "since": "2026-03-01T01:00:00Z"}, "limit": 2, "rate": 5000}
	_, res := w.must(200, "POST", "/v1/dlq/reprocess", w.keys["ADMIN"], filter)
	if res["matched"] != float64(2) || res["reprocessed"] != float64(2) || res["remaining"] != float64(2) {
		t.Fatalf("first call %v", res)
	}
	_, res = w.must(200, "POST", "/v1/dlq/reprocess", w.keys["ADMIN"], filter)
	if res["reprocessed"] != float64(2) || res["remaining"] != float64(0) {
		t.Fatalf("second call %v", res)
	}
	if reasons := w.auditOf(w.keys["ADMIN"], control.ActionDLQReprocess); len(reasons) != 2 ||
		!strings.HasPrefix(reasons[0], "by filter consumer=event-stats since=2026-03-01T01:00:00Z: matched 2") {
		t.Fatalf("audit %q", reasons)
	}
	// all: the tenant's rest, never B's.
	_, res = w.must(200, "POST", "/v1/dlq/reprocess", w.keys["ADMIN"], map[string]any{"all": true})
	if res["reprocessed"] != float64(2) || res["remaining"] != float64(0) || !slices.Contains(strs(res["ids"]), hb.ID) {
		t.Fatalf("all %v", res)
	}
	if diff := cmp.Diff([]string{b1.ID}, w.bus.dlqIDs()); diff != "" {
		t.Fatalf("DLQ after tenant A's all (-want +got):\n%s", diff)
	}
	// SUPER_ADMIN, every tenant: recorded in the global log.
	_, res = w.must(200, "POST", "/v1/dlq/reprocess", w.admin, map[string]any{"all": true})
	if res["reprocessed"] != float64(1) || res["remaining"] != float64(0) {
		t.Fatalf("SUPER_ADMIN all %v", res)
	}
	if reasons := w.auditOf(w.admin, control.ActionDLQReprocess); len(reasons) != 1 || !strings.HasPrefix(reasons[0], "all of every tenant: matched 1, reprocessed 1") {
		t.Fatalf("global audit %q", reasons)
	}
	w.must(404, "POST", "/v1/dlq/reprocess?tenant="+w.b, w.keys["ADMIN"], map[string]any{"all": true})
}

// TestReprocessAnEntryFailingAgain: a consumer that fails a redelivered event puts it back in the
// DLQ with a new position; one call does not take it twice.
func TestReprocessAnEntryFailingAgain(t *testing.T) {
	w := newEventsWorld(t, nil)
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	a1 := w.bus.deadLetter(w.a, "event-stats", "evt_a1", typeRegistered, t0)
	w.bus.onRedeliver = func(consumer string, m bus.Message) {
		w.bus.deadLetter(m.Tenant, consumer, m.ID, m.Type, t0.Add(time.Hour))
	}
	_, res := w.must(200, "POST", "/v1/dlq/reprocess", w.keys["ADMIN"], map[string]any{"all": true, "rate": 5000})
	if res["matched"] != float64(1) || res["reprocessed"] != float64(1) || res["remaining"] != float64(1) {
		t.Fatalf("reprocess %v", res)
	}
	if got := w.bus.redeliveries(); len(got) != 1 {
		t.Fatalf("redelivered %v", got)
	}
	if ids := w.bus.dlqIDs(); len(ids) != 1 || ids[0] != a1.ID {
		t.Fatalf("DLQ %v, want the entry back under its id", ids)
	}
}

// TestReprocessLeavesDeadLettersOfRetiredConsumers: nothing would receive them, so they stay.
func TestReprocessLeavesDeadLettersOfRetiredConsumers(t *testing.T) {
	w := newEventsWorld(t, nil)
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	retired := w.bus.deadLetter(w.a, "retired", "evt_r", typeRegistered, t0)
	a1 := w.bus.deadLetter(w.a, "event-stats", "evt_a1", typeRegistered, t0)
	_, res := w.must(200, "POST", "/v1/dlq/reprocess", w.keys["ADMIN"], map[string]any{"all": true, "dry_run": true})
	if res["matched"] != float64(1) || res["remaining"] != float64(2) || !slices.Equal(strs(res["ids"]), []string{a1.ID}) {
		t.Fatalf("dry run %v", res)
	}
	_, res = w.must(200, "POST", "/v1/dlq/reprocess", w.keys["ADMIN"], map[string]any{"all": true})
	if res["matched"] != float64(1) || res["reprocessed"] != float64(1) || res["remaining"] != float64(1) {
		t.Fatalf("reprocess %v", res)
	}
	if diff := cmp.Diff([]string{retired.ID}, w.bus.dlqIDs()); diff != "" {
		t.Fatalf("DLQ (-want +got):\n%s", diff)
	}
	if reasons := w.auditOf(w.keys["ADMIN"], control.ActionDLQReprocess); len(reasons) != 1 ||
		!strings.Contains(reasons[0], "remaining 1, 1 left of consumers the kernel does not run") {
		t.Fatalf("audit %q", reasons)
	}
}

func TestReprocessFailureIsAuditedWithWhatWasDone(t *testing.T) {
	w := newEventsWorld(t, nil)
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	a1 := w.bus.deadLetter(w.a, "event-stats", "evt_a1", typeRegistered, t0)
	a2 := w.bus.deadLetter(w.a, "event-stats", "evt_a2", typeRegistered, t0)
	w.bus.failFrom = 2
	_, p := w.must(503, "POST", "/v1/dlq/reprocess", w.keys["ADMIN"], map[string]any{"all": true, "rate": 5000})
	if strings.Contains(fmt.Sprint(p), "injected") {
		t.Fatalf("the cause leaked: %v", p)
	}
	if diff := cmp.Diff([]string{a2.ID}, w.bus.dlqIDs()); diff != "" {
		t.Fatalf("DLQ (-want +got):\n%s", diff)
	}
	reasons := w.auditOf(w.keys["ADMIN"], control.ActionDLQReprocess)
	if len(reasons) != 1 || !strings.Contains(reasons[0], "reprocessed 1, then failed; ids: "+a1.ID) {
		t.Fatalf("audit %q", reasons)
	}
}

// TestReprocessStopsWithinItsTimeBudget paces at 1/s with a budget of 1 s: the second redelivery
// would start after the budget, so the call answers with one done and the rest left.
func TestReprocessStopsWithinItsTimeBudget(t *testing.T) {
	w := newEventsWorld(t, func(d *Deps) { d.Config.HTTP.WriteTimeout = config.Duration(2 * time.Second) })
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	for i := range 3 {
		w.bus.deadLetter(w.a, "event-stats", fmt.Sprintf("evt_a%d", i), typeRegistered, t0)
	}
	_, res := w.must(200, "POST", "/v1/dlq/reprocess", w.keys["ADMIN"], map[string]any{"all": true, "rate": 1})
	if res["matched"] != float64(3) || res["reprocessed"] != float64(1) || res["remaining"] != float64(2) || len(res["ids"].([]any)) != 1 {
		t.Fatalf("reprocess %v", res)
	}
}

func TestReplayEvents(t *testing.T) {
	w := newEventsWorld(t, nil)
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	w.bus.event(w.a, "evt_old", typeRegistered, t0.Add(-time.Hour))
	w.bus.event(w.a, "evt_1", typeRegistered, t0)
	w.bus.event(w.b, "evt_b", typeRegistered, t0.Add(time.Minute))
	w.bus.event(w.a, "evt_2", typeHeartbeat, t0.Add(2*time.Minute))
	w.bus.event(w.a, "evt_3", typeRegistered, t0.Add(3*time.Minute))
	w.bus.event(w.a, "evt_late", typeRegistered, t0.Add(time.Hour))
	window := func(extra map[string]any) map[string]any {
		b := map[string]any{"from": "2026-03-01T00:00:00Z", "to": "2026-03-01T00:10:00Z", "consumer": "event-stats"}
		for k, v := range extra {
			b[k] = v
		}
		return b
	}

	_, res := w.must(200, "POST", "/v1/events/replay", w.keys["ADMIN"], window(map[string]any{"dry_run": true}))
	if res["dry_run"] != true || res["matched"] != float64(3) || res["redelivered"] != float64(0) || res["truncated"] != false ||
		res["oldest_available"] != "2026-02-28T23:00:00Z" || len(w.bus.redeliveries()) != 0 {
		t.Fatalf("dry run %v", res)
	}
	// Two per call: truncated, continuing from the third.
	_, res = w.must(200, "POST", "/v1/events/replay", w.keys["ADMIN"], window(map[string]any{"limit": 2}))
	if res["matched"] != float64(2) || res["redelivered"] != float64(2) || res["truncated"] != true || res["next_from"] != "2026-03-01T00:03:00Z" {
		t.Fatalf("replay %v", res)
	}
	_, res = w.must(200, "POST", "/v1/events/replay", w.keys["ADMIN"], window(map[string]any{"from": res["next_from"]}))
	if res["matched"] != float64(1) || res["truncated"] != false {
		t.Fatalf("continued replay %v", res)
	}
	want := []redelivery{
		{"event-stats", "evt_1", "replay:event-stats:2"},
		{"event-stats", "evt_2", "replay:event-stats:4"},
		{"event-stats", "evt_3", "replay:event-stats:5"},
	}
	if diff := cmp.Diff(want, w.bus.redeliveries()); diff != "" {
		t.Fatalf("redeliveries (-want +got):\n%s", diff)
	}
	// Types; replaying again is deduplicated by key.
	_, res = w.must(200, "POST", "/v1/events/replay", w.keys["ADMIN"], window(map[string]any{"types": []string{typeHeartbeat}}))
	if res["matched"] != float64(1) || len(w.bus.redeliveries()) != 3 {
		t.Fatalf("typed replay %v, redeliveries %v", res, w.bus.redeliveries())
	}
	// A window the stream no longer holds.
	_, res = w.must(200, "POST", "/v1/events/replay", w.keys["ADMIN"], window(map[string]any{"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"}))
	if res["matched"] != float64(0) || res["oldest_available"] != "2026-02-28T23:00:00Z" {
		t.Fatalf("expired window %v", res)
	}
	reasons := w.auditOf(w.keys["ADMIN"], control.ActionEventsReplay)
	if len(reasons) != 4 || reasons[0] != "matched 2, redelivered 2, truncated at 2026-03-01T00:03:00Z; window 2026-03-01T00:00:00Z to 2026-03-01T00:10:00Z" {
		t.Fatalf("audit %q", reasons)
	}
	if got := w.auditOf(w.keys["ADMIN"], control.ActionEventsReplayDryRun); len(got) != 1 {
		t.Fatalf("dry run audit %q", got)
	}

	// SUPER_ADMIN without a tenant replays every tenant's events.
	_, res = w.must(200, "POST", "/v1/events/replay", w.admin, window(map[string]any{"dry_run": true}))
	if res["matched"] != float64(4) {
		t.Fatalf("SUPER_ADMIN replay %v", res)
	}

	for _, tt := range []struct {
		body  map[string]any
		field string
	}{
		{window(map[string]any{"to": "2026-03-01T00:00:00Z"}), "body.to"},
		{window(map[string]any{"to": "2026-03-08T00:00:01Z"}), "body.to"},
		{window(map[string]any{"consumer": "nobody"}), "body.consumer"},
		{window(map[string]any{"consumer": "has space"}), "body.consumer"},
		{window(map[string]any{"limit": 10001}), "body.limit"},
		{window(map[string]any{"types": []string{"agent"}}), "body.types.0"},
		{map[string]any{"from": "2026-03-01T00:00:00Z", "to": "2026-03-01T00:10:00Z"}, "body.consumer"},
	} {
		_, bad := w.must(400, "POST", "/v1/events/replay", w.keys["ADMIN"], tt.body)
		if names := fieldNames(bad); !slices.Contains(names, tt.field) {
			t.Errorf("%v: fields %v, want %s", tt.body, names, tt.field)
		}
	}
	w.must(404, "POST", "/v1/events/replay?tenant="+w.b, w.keys["ADMIN"], window(nil))
	w.must(403, "POST", "/v1/events/replay", w.keys["OPERATOR"], window(nil))
}

func TestEventStatsAndConsumers(t *testing.T) {
	at := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	var world *eventsWorld
	world = newEventsWorld(t, func(d *Deps) {
		d.EventStats = tenantsStats{func() []consumers.EventStat {
			return []consumers.EventStat{
				{Tenant: world.a, Type: typeRegistered, Count: 3, LastEventAt: at},
				{Tenant: world.b, Type: typeRegistered, Count: 7, LastEventAt: at},
			}
		}}
	})
	w := world
	_, st := w.must(200, "GET", "/v1/events/stats", w.keys["OPERATOR"], nil)
	if items := st["items"].([]any); len(items) != 1 || items[0].(map[string]any)["tenant"] != w.a || items[0].(map[string]any)["count"] != float64(3) {
		t.Fatalf("tenant A's stats %v", st)
	}
	_, st = w.must(200, "GET", "/v1/events/stats", w.admin, nil)
	if items := st["items"].([]any); len(items) != 2 {
		t.Fatalf("SUPER_ADMIN stats %v", st)
	}
	w.must(403, "GET", "/v1/events/stats", w.keys["VIEWER"], nil)

	w.bus.stats["event-stats"] = bus.ConsumerStats{Pending: 4, AckPending: 1}
	w.bus.deadLetter(w.a, "event-stats", "evt_1", typeRegistered, at)
	w.bus.deadLetter(w.b, "event-stats", "evt_2", typeRegistered, at)
	_, cs := w.must(200, "GET", "/v1/events/consumers", w.admin, nil)
	want := map[string]any{
		"dead_letters": float64(2),
		"items": []any{
			map[string]any{"name": "event-stats", "created": true, "pending": float64(4), "ack_pending": float64(1)},
			map[string]any{"name": "heartbeats", "created": false, "pending": float64(0), "ack_pending": float64(0)},
		},
	}
	if diff := cmp.Diff(want, cs); diff != "" {
		t.Fatalf("consumers (-want +got):\n%s", diff)
	}
	w.must(403, "GET", "/v1/events/consumers", w.keys["ADMIN"], nil)
}

// tenantsStats returns what fn gives, whatever it is asked: the handler must filter.
type tenantsStats struct{ fn func() []consumers.EventStat }

func (s tenantsStats) EventStats(context.Context, string) ([]consumers.EventStat, error) {
	return s.fn(), nil
}

func TestEventEndpointsWithoutABus(t *testing.T) {
	w := newEventsWorld(t, func(d *Deps) { d.Bus, d.EventStats = nil, nil })
	w.must(503, "GET", "/v1/dlq", w.keys["ADMIN"], nil)
	w.must(503, "POST", "/v1/dlq/reprocess", w.keys["ADMIN"], map[string]any{"all": true})
	w.must(503, "GET", "/v1/events/stats", w.keys["ADMIN"], nil)
	w.must(503, "GET", "/v1/events/consumers", w.admin, nil)
	// Another tenant is still "not found" first.
	w.must(404, "GET", "/v1/dlq?tenant="+w.b, w.keys["ADMIN"], nil)
}
