package e2e

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/bus/natsbus"
	"github.com/nops-kernel/nops/internal/bus/redisbus"
	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/consumers"
	"github.com/nops-kernel/nops/internal/events"
	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
	"github.com/nops-kernel/nops/internal/redisconn"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

// The DLQ console end to end: a kernel whose bus the test shares (its own namespace of the
// shared NATS or Redis), so that the test can put dead letters beside the ones the kernel's
// consumers make, and check what the API and the consumers do with them.

// sharedBus configures a kernel for a bus the test opens too.
type sharedBus struct {
	name   string
	config func(t *testing.T, ns string) (mutate func(*config.Config), open func(t *testing.T) bus.Bus)
}

var sharedBuses = []sharedBus{
	{"nats", func(t *testing.T, ns string) (func(*config.Config), func(*testing.T) bus.Bus) {
		url := services.NATSURL(t)
		t.Cleanup(func() { services.DeleteNATSStreams(t, url, ns) }) // after the kernel and the test's bus are closed
		return func(c *config.Config) {
				c.Bus.NATSURL = url
				c.Bus.Namespace = ns
			}, func(t *testing.T) bus.Bus {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				b, err := natsbus.Open(ctx, natsbus.Config{URL: url, Namespace: ns, Name: "e2e-dlq"}, slog.New(slog.DiscardHandler))
				if err != nil {
					t.Fatalf("open the test's NATS bus: %v", err)
				}
				t.Cleanup(func() { _ = b.Close() })
				return b
			}
	}},
	{"redis", func(t *testing.T, ns string) (func(*config.Config), func(*testing.T) bus.Bus) {
		url := services.RedisURL(t)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		rc, err := redisconn.Open(ctx, redisconn.Config{URL: url})
		if err != nil {
			t.Fatalf("redis: %v", err)
		}
		t.Cleanup(func() { _ = rc.Close() })
		services.CleanupRedisNamespace(t, url, ns)
		return func(c *config.Config) {
				c.Bus.Kind = "redis"
				c.Redis.URL = url
				c.Bus.Namespace = ns
				c.Idempotency.Store = "sql" // nothing of the kernel's outside the namespace
			}, func(t *testing.T) bus.Bus {
				b, err := redisbus.Open(context.Background(), redisbus.Config{Client: rc, Namespace: ns})
				if err != nil {
					t.Fatalf("open the test's Redis bus: %v", err)
				}
				t.Cleanup(func() { _ = b.Close() })
				return b
			}
	}},
}

// dlqWorld is a kernel on a shared bus with tenants A (the fixture's) and B.
type dlqWorld struct {
	*fixture
	bus        bus.Bus // the test's own client of the kernel's bus
	other      string  // tenant B
	otherAdmin string  // ADMIN key header of B
}

func forEachSharedBus(t *testing.T, test func(t *testing.T, w *dlqWorld)) {
	for _, sb := range sharedBuses {
		t.Run(sb.name, func(t *testing.T) {
			ns := services.UniqueName("dlq")
			mutate, open := sb.config(t, ns)
			w := &dlqWorld{fixture: newFixture(t, mutate, func(c *config.Config) {
				c.Bus.BackoffInitial = config.Duration(10 * time.Millisecond)
				c.Bus.BackoffMax = config.Duration(50 * time.Millisecond)
			})}
			w.bus = open(t)
			w.other = newTenant(t, w.k, w.admin, "globex")
			_, w.otherAdmin = newKey(t, w.k, w.admin, w.other, "ADMIN", nil)
			test(t, w)
		})
	}
}

// heartbeatEvent is a valid event of tenant, as the kernel would have published it.
func heartbeatEvent(t *testing.T, tenant string, at time.Time) bus.Message {
	t.Helper()
	ev, err := events.New(events.TypeAgentHeartbeat, tenant, "agents/agt_01jz8y3w6v6r3b5q8x9k2m4n7q",
		events.AgentHeartbeat{AgentID: "agt_01jz8y3w6v6r3b5q8x9k2m4n7q", Tenant: tenant, HeartbeatAt: at}, at, "")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return bus.Message{ID: ev.ID, Tenant: tenant, Type: string(ev.Type), Payload: raw}
}

// seedDeadLetter puts a valid event of tenant in the DLQ of the event-stats consumer, as if it had
// failed there while the database was down: reprocessing it now succeeds.
func (w *dlqWorld) seedDeadLetter(t *testing.T, tenant string) bus.DeadLetter {
	t.Helper()
	now := time.Now().UTC()
	m := heartbeatEvent(t, tenant, now)
	dl := bus.DeadLetter{
		ID: bus.DeadLetterID(consumers.EventStatsName, m.ID), Message: m, Consumer: consumers.EventStatsName,
		Reason: "seeded: database unavailable", Attempts: 5, StoredAt: now, FailedAt: now, Source: "seed-" + m.ID,
	}
	if err := w.bus.AddDeadLetter(context.Background(), dl); err != nil {
		t.Fatalf("seed a dead letter: %v", err)
	}
	return dl
}

type dlqPage struct {
	Items []struct {
		ID       string `json:"id"`
		Tenant   string `json:"tenant"`
		Consumer string `json:"consumer"`
		EventID  string `json:"event_id"`
		Reason   string `json:"reason"`
	} `json:"items"`
	NextCursor string `json:"next_cursor"`
}

func (w *dlqWorld) dlqIDs(t *testing.T, cred string, query string) []string {
	t.Helper()
	resp, body := w.k.Do(t, "GET", "/v1/dlq?limit=500"+query, nil, cred)
	mustStatus(t, resp, body, http.StatusOK)
	var ids []string
	for _, it := range decode[dlqPage](t, body).Items {
		ids = append(ids, it.ID)
	}
	slices.Sort(ids)
	return ids
}

type reprocessResult struct {
	DryRun      bool     `json:"dry_run"`
	Matched     int      `json:"matched"`
	Reprocessed int      `json:"reprocessed"`
	Remaining   int64    `json:"remaining"`
	IDs         []string `json:"ids"`
}

// eventStats is a GET /v1/events/stats answer.
type eventStats struct {
	Items []struct {
		Tenant string `json:"tenant"`
		Type   string `json:"type"`
		Count  int64  `json:"count"`
	} `json:"items"`
}

// statCount returns the event count of typ that cred's tenant reads, as the event-stats consumer
// projected it.
func statCount(t *testing.T, k *kerneltest.Kernel, cred, typ string) int64 {
	t.Helper()
	resp, body := k.Do(t, "GET", "/v1/events/stats", nil, cred)
	mustStatus(t, resp, body, http.StatusOK)
	for _, it := range decode[eventStats](t, body).Items {
		if it.Type == typ {
			return it.Count
		}
	}
	return 0
}

func sorted(s ...string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

// TestDLQReprocessing: a malformed event dead-lettered by the kernel's own consumer, dead letters
// of valid events; tenant isolation of the list and of reprocessing; a dry run changes nothing;
// reprocessing by ids empties those entries and the consumer applies them once; audit records.
func TestDLQReprocessing(t *testing.T) {
	forEachSharedBus(t, testDLQReprocessing)
}

func testDLQReprocessing(t *testing.T, w *dlqWorld) {
	k, adminA := w.k, w.keys["ADMIN"]
	ctx := context.Background()

	// The kernel's event-stats consumer dead-letters an event it cannot parse, in B's DLQ.
	bad := bus.Message{ID: "evt_e2e_malformed", Tenant: w.other, Type: string(events.TypeAgentRegistered), Payload: []byte(`{"not":"a cloudevent"}`)}
	if err := w.bus.Publish(ctx, bad); err != nil {
		t.Fatalf("publish a malformed event: %v", err)
	}
	badID := bus.DeadLetterID(consumers.EventStatsName, bad.ID)
	kerneltest.WaitFor(t, 30*time.Second, "the malformed event in B's DLQ", func() bool {
		return slices.Equal(w.dlqIDs(t, w.otherAdmin, ""), []string{badID})
	})
	// The kernel audits it once it is stored (after the DLQ shows it).
	kerneltest.WaitFor(t, 30*time.Second, "the dead letter in B's audit log", func() bool {
		resp, body := k.Do(t, "GET", "/v1/audit?action=events.dead_lettered", nil, w.otherAdmin)
		mustStatus(t, resp, body, http.StatusOK)
		return strings.Contains(string(body), badID)
	})

	// Dead letters of valid events in A's DLQ.
	a1, a2, a3 := w.seedDeadLetter(t, w.tenant), w.seedDeadLetter(t, w.tenant), w.seedDeadLetter(t, w.tenant)
	if got, want := w.dlqIDs(t, adminA, ""), sorted(a1.ID, a2.ID, a3.ID); !slices.Equal(got, want) {
		t.Fatalf("A's DLQ %v, want %v", got, want)
	}
	if got := w.dlqIDs(t, w.otherAdmin, ""); !slices.Equal(got, []string{badID}) {
		t.Fatalf("B's DLQ %v", got)
	}
	if got := w.dlqIDs(t, w.keys["OPERATOR"], "&consumer="+consumers.EventStatsName); len(got) != 3 {
		t.Fatalf("A's DLQ for OPERATOR, by consumer: %v", got)
	}
	resp, body := k.Do(t, "GET", "/v1/dlq", nil, w.keys["VIEWER"])
	mustStatus(t, resp, body, http.StatusForbidden)
	if got := w.dlqIDs(t, w.admin, ""); len(got) != 4 {
		t.Fatalf("SUPER_ADMIN sees %v, want every tenant's 4", got)
	}

	// A cannot see nor reprocess B's dead letter.
	resp, body = k.Do(t, "GET", "/v1/dlq?tenant="+w.other, nil, adminA)
	mustStatus(t, resp, body, http.StatusNotFound)
	resp, body = k.Do(t, "POST", "/v1/dlq/reprocess?tenant="+w.other, map[string]any{"all": true}, adminA)
	mustStatus(t, resp, body, http.StatusNotFound)
	resp, body = k.Do(t, "POST", "/v1/dlq/reprocess", map[string]any{"ids": []string{badID}}, adminA)
	mustStatus(t, resp, body, http.StatusOK)
	if r := decode[reprocessResult](t, body); r.Matched != 0 || r.Reprocessed != 0 || r.Remaining != 0 {
		t.Fatalf("A reprocessing B's dead letter: %+v", r)
	}
	if got := w.dlqIDs(t, w.otherAdmin, ""); !slices.Equal(got, []string{badID}) {
		t.Fatalf("B's DLQ after A's attempt: %v", got)
	}

	// A dry run changes nothing.
	before := statCount(t, k, adminA, string(events.TypeAgentHeartbeat))
	ids := []string{a1.ID, a2.ID}
	resp, body = k.Do(t, "POST", "/v1/dlq/reprocess", map[string]any{"ids": ids, "dry_run": true}, adminA)
	mustStatus(t, resp, body, http.StatusOK)
	if r := decode[reprocessResult](t, body); !r.DryRun || r.Matched != 2 || r.Reprocessed != 0 || r.Remaining != 2 || !slices.Equal(sorted(r.IDs...), sorted(ids...)) {
		t.Fatalf("dry run %+v", r)
	}
	if got, want := w.dlqIDs(t, adminA, ""), sorted(a1.ID, a2.ID, a3.ID); !slices.Equal(got, want) {
		t.Fatalf("A's DLQ after a dry run %v, want %v", got, want)
	}

	// Reprocessing by ids empties those entries; the consumer applies each event once.
	resp, body = k.Do(t, "POST", "/v1/dlq/reprocess", map[string]any{"ids": ids, "rate": 1000}, adminA)
	mustStatus(t, resp, body, http.StatusOK)
	if r := decode[reprocessResult](t, body); r.DryRun || r.Matched != 2 || r.Reprocessed != 2 || r.Remaining != 0 {
		t.Fatalf("reprocess %+v", r)
	}
	if got := w.dlqIDs(t, adminA, ""); !slices.Equal(got, []string{a3.ID}) {
		t.Fatalf("A's DLQ after reprocessing %v, want only %s", got, a3.ID)
	}
	kerneltest.WaitFor(t, 30*time.Second, "the reprocessed events counted", func() bool {
		return statCount(t, k, adminA, string(events.TypeAgentHeartbeat)) == before+2
	})
	// Again: nothing left to do, nothing applied twice.
	resp, body = k.Do(t, "POST", "/v1/dlq/reprocess", map[string]any{"ids": ids}, adminA)
	mustStatus(t, resp, body, http.StatusOK)
	if r := decode[reprocessResult](t, body); r.Matched != 0 || r.Reprocessed != 0 {
		t.Fatalf("repeated reprocess %+v", r)
	}

	// Audit: one record per call, in A's log, naming the ids.
	resp, body = k.Do(t, "GET", "/v1/audit?action=dlq.reprocess", nil, adminA)
	mustStatus(t, resp, body, http.StatusOK)
	page := decode[auditPage](t, body)
	if len(page.Items) != 3 || !strings.Contains(page.Items[1].Decision.Reason, "reprocessed 2") ||
		!strings.Contains(page.Items[1].Decision.Reason, a1.ID) || !strings.Contains(page.Items[1].Decision.Reason, a2.ID) {
		t.Fatalf("dlq.reprocess records %+v", page.Items)
	}
	resp, body = k.Do(t, "GET", "/v1/audit?action=dlq.reprocess.dry_run", nil, adminA)
	mustStatus(t, resp, body, http.StatusOK)
	if page := decode[auditPage](t, body); len(page.Items) != 1 {
		t.Fatalf("dlq.reprocess.dry_run records %+v", page.Items)
	}
	resp, body = k.Do(t, "GET", "/v1/audit?action=dlq.reprocess", nil, w.otherAdmin)
	mustStatus(t, resp, body, http.StatusOK)
	if page := decode[auditPage](t, body); len(page.Items) != 0 {
		t.Fatalf("B's log records A's reprocessing: %+v", page.Items)
	}

	// SUPER_ADMIN, every tenant, by filter: A's last one and B's malformed one. B's fails again
	// and comes back under the same id; A's is applied.
	resp, body = k.Do(t, "POST", "/v1/dlq/reprocess", map[string]any{"filter": map[string]any{"consumer": consumers.EventStatsName}}, w.admin)
	mustStatus(t, resp, body, http.StatusOK)
	if r := decode[reprocessResult](t, body); r.Reprocessed != 2 {
		t.Fatalf("SUPER_ADMIN reprocess %+v", r)
	}
	kerneltest.WaitFor(t, 30*time.Second, "A's DLQ empty and B's malformed event back", func() bool {
		return len(w.dlqIDs(t, adminA, "")) == 0 && slices.Equal(w.dlqIDs(t, w.otherAdmin, ""), []string{badID})
	})
}

// TestDLQValidationNamesTheField: refused requests name the offending field.
func TestDLQValidationNamesTheField(t *testing.T) {
	f := newFixture(t)
	for _, tt := range []struct {
		method, path string
		body         any
		field        string
	}{
		{"POST", "/v1/dlq/reprocess", map[string]any{}, "body"},
		{"POST", "/v1/dlq/reprocess", map[string]any{"all": true, "ids": []string{bus.DeadLetterID("c", "e")}}, "body.all"},
		{"POST", "/v1/dlq/reprocess", map[string]any{"all": false}, "body.all"},
		{"POST", "/v1/dlq/reprocess", map[string]any{"all": true, "limit": 0}, "body.limit"},
		{"POST", "/v1/dlq/reprocess", map[string]any{"ids": []string{"not-an-id"}}, "body.ids.0"},
		{"POST", "/v1/dlq/reprocess", map[string]any{"filter": map[string]any{"since": "2026-03-02T00:00:00Z", "until": "2026-03-01T00:00:00Z"}}, "body.filter.until"},
		{"GET", "/v1/dlq?consumer=a%20b", nil, "query.consumer"},
		{"GET", "/v1/dlq?since=2026-03-02T00:00:00Z&until=2026-03-01T00:00:00Z", nil, "query.until"},
		{"POST", "/v1/events/replay", map[string]any{"from": "2026-03-01T00:00:00Z", "to": "2026-03-01T01:00:00Z", "consumer": "nobody"}, "body.consumer"},
		{"POST", "/v1/events/replay", map[string]any{"from": "2026-03-01T00:00:00Z", "to": "2026-03-01T00:00:00Z", "consumer": consumers.EventStatsName}, "body.to"},
		{"POST", "/v1/events/replay", map[string]any{"from": "2026-03-01T00:00:00Z", "to": "2026-03-09T00:00:00Z", "consumer": consumers.EventStatsName}, "body.to"},
		{"POST", "/v1/events/replay", map[string]any{"from": "2026-03-01T00:00:00Z", "consumer": consumers.EventStatsName}, "body.to"},
	} {
		t.Run(tt.method+" "+tt.path+" "+tt.field, func(t *testing.T) {
			resp, body := f.k.Do(t, tt.method, tt.path, tt.body, f.keys["ADMIN"])
			mustStatus(t, resp, body, http.StatusBadRequest)
			var p struct {
				Errors []struct {
					Name string `json:"name"`
				} `json:"errors"`
			}
			if err := json.Unmarshal(body, &p); err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, e := range p.Errors {
				names = append(names, e.Name)
			}
			if !slices.Contains(names, tt.field) {
				t.Fatalf("fields %v, want %s: %s", names, tt.field, body)
			}
		})
	}
}

// TestDLQReplayAppliesOnce replays a tenant's window to the event-stats consumer: every event
// is delivered again, and counted once all the same (the consumer's inbox).
func TestDLQReplayAppliesOnce(t *testing.T) {
	t.Run("embedded", func(t *testing.T) { testDLQReplay(t, newFixture(t)) })
	forEachSharedBus(t, func(t *testing.T, w *dlqWorld) { testDLQReplay(t, w.fixture) })
}

func testDLQReplay(t *testing.T, f *fixture) {
	k, adminA := f.k, f.keys["ADMIN"]
	from := time.Now().UTC().Add(-time.Minute)
	for _, name := range []string{"replay-a", "replay-b"} {
		resp, body := k.Do(t, "POST", "/v1/agents", agentSpec(name), adminA)
		mustStatus(t, resp, body, http.StatusCreated)
	}
	count := func() int64 { return statCount(t, k, adminA, string(events.TypeAgentRegistered)) }
	kerneltest.WaitFor(t, 30*time.Second, "both registrations counted", func() bool { return count() == 2 })

	window := map[string]any{"from": from.Format(time.RFC3339Nano), "to": time.Now().UTC().Add(time.Minute).Format(time.RFC3339Nano),
		"consumer": consumers.EventStatsName, "types": []string{string(events.TypeAgentRegistered)}}
	dry := map[string]any{"dry_run": true}
	for k, v := range window {
		dry[k] = v
	}
	resp, body := k.Do(t, "POST", "/v1/events/replay", dry, adminA)
	mustStatus(t, resp, body, http.StatusOK)
	if r := decode[replayResult](t, body); !r.DryRun || r.Matched != 2 || r.Redelivered != 0 || r.Truncated || r.OldestAvailable == nil {
		t.Fatalf("dry run %s", body)
	}
	// A subject pattern selects the same events without types, and nothing of another domain.
	for pattern, want := range map[string]int{"*.nops.agent.registered.v1": 2, "*.nops.agent.deregistered.v1": 0, "*.nops.agent.>": 2} {
		bySubject := map[string]any{"dry_run": true, "subject": pattern, "from": window["from"], "to": window["to"], "consumer": window["consumer"]}
		resp, body := k.Do(t, "POST", "/v1/events/replay", bySubject, adminA)
		mustStatus(t, resp, body, http.StatusOK)
		if r := decode[replayResult](t, body); r.Matched != want {
			t.Fatalf("dry run with subject %s: %s, want %d matched", pattern, body, want)
		}
	}
	bad := map[string]any{"dry_run": true, "subject": "a..b", "from": window["from"], "to": window["to"], "consumer": window["consumer"]}
	resp, body = k.Do(t, "POST", "/v1/events/replay", bad, adminA)
	if p := decodeProblem(t, resp, body); resp.StatusCode != http.StatusBadRequest || len(p.Errors) == 0 || p.Errors[0].Name != "body.subject" {
		t.Fatalf("invalid subject: %d %s", resp.StatusCode, body)
	}
	resp, body = k.Do(t, "POST", "/v1/events/replay", window, adminA)
	mustStatus(t, resp, body, http.StatusOK)
	if r := decode[replayResult](t, body); r.Matched != 2 || r.Redelivered != 2 {
		t.Fatalf("replay %s", body)
	}
	// The consumer has settled the redeliveries when its backlog is empty; the count is unchanged.
	kerneltest.WaitFor(t, 30*time.Second, "the consumer's backlog drained", func() bool {
		resp, body := k.Do(t, "GET", "/v1/events/consumers", nil, f.admin)
		mustStatus(t, resp, body, http.StatusOK)
		for _, it := range decode[consumerList](t, body).Items {
			if it.Name == consumers.EventStatsName {
				return it.Pending == 0 && it.AckPending == 0
			}
		}
		return false
	})
	if n := count(); n != 2 {
		t.Fatalf("after a replay the registrations are counted %d times, want 2", n)
	}
	resp, body = k.Do(t, "GET", "/v1/audit?action=events.replay", nil, adminA)
	mustStatus(t, resp, body, http.StatusOK)
	if page := decode[auditPage](t, body); len(page.Items) != 1 || !strings.Contains(page.Items[0].Decision.Reason, "redelivered 2") {
		t.Fatalf("events.replay records %+v", page.Items)
	}
	// The window of another tenant is "not found".
	other := newTenant(t, k, f.admin, "initech")
	resp, body = k.Do(t, "POST", "/v1/events/replay?tenant="+other, window, adminA)
	mustStatus(t, resp, body, http.StatusNotFound)
}

type replayResult struct {
	DryRun          bool    `json:"dry_run"`
	Matched         int     `json:"matched"`
	Redelivered     int     `json:"redelivered"`
	Truncated       bool    `json:"truncated"`
	NextFrom        *string `json:"next_from"`
	OldestAvailable *string `json:"oldest_available"`
}

type consumerList struct {
	Items []struct {
		Name       string `json:"name"`
		Created    bool   `json:"created"`
		Pending    int64  `json:"pending"`
		AckPending int64  `json:"ack_pending"`
	} `json:"items"`
	DeadLetters int64 `json:"dead_letters"`
}
