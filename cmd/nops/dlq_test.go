package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/bus/natsbus"
	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/consumers"
	"github.com/nops-kernel/nops/internal/events"
	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

// busKernel starts a kernel on its own namespace of the shared NATS and opens the test's own
// client of that bus, so that the test can put dead letters where the kernel keeps them.
func busKernel(t *testing.T) (*kerneltest.Kernel, bus.Bus) {
	t.Helper()
	url := services.NATSURL(t)
	ns := services.UniqueName("cli")
	t.Cleanup(func() { services.DeleteNATSStreams(t, url, ns) }) // runs last: after the kernel and the bus close
	k := kerneltest.Start(t, func(c *config.Config) {
		c.Bus.NATSURL = url
		c.Bus.Namespace = ns
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := natsbus.Open(ctx, natsbus.Config{URL: url, Namespace: ns, Name: "cli-test"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("open the test's bus: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return k, b
}

// seedDeadLetter puts a valid heartbeat event of tenant in the event-stats consumer's DLQ, as if
// it had failed there while the database was down.
func seedDeadLetter(t *testing.T, b bus.Bus, tenant string) bus.DeadLetter {
	t.Helper()
	now := time.Now().UTC()
	ev, err := events.New(events.TypeAgentHeartbeat, tenant, "agents/agt_01jz8y3w6v6r3b5q8x9k2m4n7q",
		events.AgentHeartbeat{AgentID: "agt_01jz8y3w6v6r3b5q8x9k2m4n7q", Tenant: tenant, HeartbeatAt: now}, now, "")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	m := bus.Message{ID: ev.ID, Tenant: tenant, Type: string(ev.Type), Payload: raw}
	dl := bus.DeadLetter{ID: bus.DeadLetterID(consumers.EventStatsName, m.ID), Message: m, Consumer: consumers.EventStatsName,
		Reason: "seeded: database unavailable", Attempts: 5, StoredAt: now, FailedAt: now, Source: "seed-" + m.ID}
	if err := b.AddDeadLetter(context.Background(), dl); err != nil {
		t.Fatalf("seed a dead letter: %v", err)
	}
	return dl
}

type dlqItem struct {
	ID       string `json:"id"`
	Tenant   string `json:"tenant"`
	Consumer string `json:"consumer"`
}

// TestDLQCommands drives `nops dlq` and `nops events` against a real kernel: list with filters
// and pages, reprocess by id (dry run, then for real) and everything in several calls with
// progress, problems printed with their fields, statistics, consumers and replay.
func TestDLQCommands(t *testing.T) {
	k, b := busKernel(t)
	base := map[string]string{"NOPS_SERVER": k.URL}
	admin := with(base, "NOPS_TOKEN", k.Token(t, ""))
	acme := fromJSON[idName](t, mustOut(t, admin, "tenants", "create", "acme", "-o", "json")).ID
	globex := fromJSON[idName](t, mustOut(t, admin, "tenants", "create", "globex", "-o", "json")).ID
	tenant := with(base, "NOPS_API_KEY", secretOf(t, mustOut(t, admin, "keys", "create", "--tenant", "acme", "--name", "ops", "--role", "ADMIN")))
	viewer := with(base, "NOPS_API_KEY", secretOf(t, mustOut(t, admin, "keys", "create", "--tenant", "acme", "--name", "v", "--role", "VIEWER")))

	a1, a2, a3 := seedDeadLetter(t, b, acme), seedDeadLetter(t, b, acme), seedDeadLetter(t, b, acme)
	g1 := seedDeadLetter(t, b, globex)

	// list: a table of the tenant's own, JSON, filters, --limit across pages.
	out, _ := ok(t, tenant, "dlq", "list")
	if !regexp.MustCompile(`(?m)^ID\s+TENANT\s+CONSUMER\s+TYPE\s+EVENT\s+ATTEMPTS\s+FAILED\s+REASON$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^`+a1.ID+`\s+`+acme+`\s+event-stats\s+nops\.agent\.heartbeat\.v1\s+evt_\S+\s+5\s+20\S+\s+seeded: database unavailable$`).MatchString(out) ||
		strings.Count(out, "dlq_") != 3 || strings.Contains(out, g1.ID) {
		t.Fatalf("dlq list:\n%s", out)
	}
	out, _ = ok(t, tenant, "dlq", "list", "-o", "json", "--consumer", "event-stats", "--since", "1h", "--type", "nops.agent.heartbeat.v1")
	if l := fromJSON[listOf[dlqItem]](t, out); len(l.Items) != 3 || l.Items[0].ID != a1.ID || l.Items[2].ID != a3.ID {
		t.Fatalf("dlq list -o json with filters: %s", out)
	}
	out, _ = ok(t, tenant, "dlq", "list", "-o", "json", "--limit", "2", "--page-size", "1")
	if l := fromJSON[listOf[dlqItem]](t, out); len(l.Items) != 2 || l.Items[1].ID != a2.ID {
		t.Fatalf("dlq list --limit 2 --page-size 1: %s", out)
	}
	out, _ = ok(t, tenant, "dlq", "list", "-o", "json", "--until", "1h")
	if l := fromJSON[listOf[dlqItem]](t, out); len(l.Items) != 0 {
		t.Fatalf("dlq list --until 1h: %s", out)
	}
	out, _ = ok(t, admin, "dlq", "list", "-o", "json")
	if l := fromJSON[listOf[dlqItem]](t, out); len(l.Items) != 4 {
		t.Fatalf("SUPER_ADMIN dlq list: %s", out)
	}
	_, errOut := fails(t, tenant, "dlq", "list", "--since", "yesterday")
	if !strings.Contains(errOut, "--since") {
		t.Fatalf("bad --since: %q", errOut)
	}
	_, errOut = fails(t, viewer, "dlq", "list")
	if !strings.Contains(errOut, "Forbidden") {
		t.Fatalf("viewer: %q", errOut)
	}

	// reprocess: a selection is required and exclusive; the kernel's problems name the field.
	for _, args := range [][]string{{"dlq", "reprocess"}, {"dlq", "reprocess", "--all", "--id", a1.ID}, {"dlq", "reprocess", "--all", "--consumer", "x"}} {
		_, errOut = fails(t, tenant, args...)
		if !strings.Contains(errOut, "--id") {
			t.Fatalf("nops %s: %q", strings.Join(args, " "), errOut)
		}
	}
	_, errOut = fails(t, tenant, "dlq", "reprocess", "--id", "not-an-id")
	if !regexp.MustCompile(`^nops: Bad Request: .*\(body\.ids\.0: .+\) \[request id \S+\]\n$`).MatchString(errOut) {
		t.Fatalf("a bad id: %q", errOut)
	}
	_, errOut = fails(t, tenant, "dlq", "reprocess", "--all", "--rate", "0")
	if !strings.Contains(errOut, "--rate") {
		t.Fatalf("--rate 0: %q", errOut)
	}

	// A dry run lists and changes nothing.
	out, _ = ok(t, tenant, "dlq", "reprocess", "--id", a1.ID+","+a2.ID, "--dry-run")
	if !strings.HasPrefix(out, "dry run: 2 dead letters match") || !strings.Contains(out, a1.ID) || !strings.Contains(out, a2.ID) {
		t.Fatalf("dry run:\n%s", out)
	}
	if l := fromJSON[listOf[dlqItem]](t, mustOut(t, tenant, "dlq", "list", "-o", "json")); len(l.Items) != 3 {
		t.Fatalf("a dry run changed the DLQ: %v", l.Items)
	}

	// By id, then the rest one per call, with a progress line per call off a terminal.
	out, _ = ok(t, tenant, "dlq", "reprocess", "--id", a1.ID, "-o", "json")
	if r := fromJSON[reprocessDoc](t, out); r.Reprocessed != 1 || r.Remaining != 0 || r.Calls != 1 || len(r.IDs) != 1 || r.IDs[0] != a1.ID {
		t.Fatalf("reprocess --id: %s", out)
	}
	out, errOut = ok(t, tenant, "dlq", "reprocess", "--all", "--batch", "1", "--rate", "1000")
	if out != "reprocessed 2 dead letters in 2 calls; 0 remaining\n" || !strings.Contains(errOut, "reprocessed 1, remaining 1\n") ||
		!strings.Contains(errOut, "reprocessed 2, remaining 0\n") {
		t.Fatalf("reprocess --all --batch 1:\nstdout %q\nstderr %q", out, errOut)
	}
	if l := fromJSON[listOf[dlqItem]](t, mustOut(t, tenant, "dlq", "list", "-o", "json")); len(l.Items) != 0 {
		t.Fatalf("DLQ after reprocessing: %v", l.Items)
	}
	// globex's dead letter is still there, for SUPER_ADMIN to reprocess by name.
	out, _ = ok(t, admin, "dlq", "reprocess", "--all", "--tenant", "globex", "-o", "json")
	if r := fromJSON[reprocessDoc](t, out); r.Reprocessed != 1 || r.IDs[0] != g1.ID {
		t.Fatalf("SUPER_ADMIN reprocess --tenant globex: %s", out)
	}

	// events stats: the reprocessed heartbeats, counted once each.
	kerneltest.WaitFor(t, 30*time.Second, "the reprocessed events counted", func() bool {
		code, out, _ := runCLI(t, tenant, "events", "stats")
		return code == 0 && regexp.MustCompile(`(?m)^`+acme+`\s+nops\.agent\.heartbeat\.v1\s+3\s+20\S+$`).MatchString(out)
	})
	out, _ = ok(t, admin, "events", "stats", "-o", "json")
	if !strings.Contains(out, globex) || !strings.Contains(out, acme) {
		t.Fatalf("SUPER_ADMIN events stats: %s", out)
	}

	// events consumers (SUPER_ADMIN).
	out, _ = ok(t, admin, "events", "consumers")
	if !regexp.MustCompile(`(?m)^NAME\s+STATE\s+PENDING\s+ACK PENDING$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^event-stats\s+active\s+\d+\s+\d+$`).MatchString(out) || !strings.Contains(out, "dead letters: 0") {
		t.Fatalf("events consumers:\n%s", out)
	}
	_, errOut = fails(t, tenant, "events", "consumers")
	if !strings.Contains(errOut, "Forbidden") {
		t.Fatalf("tenant events consumers: %q", errOut)
	}
}

// TestEventsReplayCommand replays a tenant's hour to the event-stats consumer: a dry run, then
// one event per call, which loops on next_from; the consumer counts each event once all the same.
func TestEventsReplayCommand(t *testing.T) {
	k := kerneltest.Start(t)
	base := map[string]string{"NOPS_SERVER": k.URL}
	admin := with(base, "NOPS_TOKEN", k.Token(t, ""))
	mustOut(t, admin, "tenants", "create", "acme")
	tenant := with(base, "NOPS_API_KEY", secretOf(t, mustOut(t, admin, "keys", "create", "--tenant", "acme", "--name", "ops", "--role", "ADMIN")))
	dir := t.TempDir()
	for _, name := range []string{"one", "two", "three"} {
		mustOut(t, tenant, "agents", "register", "-f", writeFile(t, dir, name+".json", agentJSON(name, "1.0.0")))
	}
	counted := regexp.MustCompile(`(?m)^\S+\s+nops\.agent\.registered\.v1\s+3\s+`)
	kerneltest.WaitFor(t, 30*time.Second, "the registrations counted", func() bool {
		code, out, _ := runCLI(t, tenant, "events", "stats")
		return code == 0 && counted.MatchString(out)
	})

	_, errOut := fails(t, tenant, "events", "replay", "--from", "1h", "--to", "2h", "--consumer", "event-stats")
	if !strings.Contains(errOut, "--to") || !strings.Contains(errOut, "must be after --from") {
		t.Fatalf("--to before --from: %q", errOut)
	}
	args := []string{"events", "replay", "--from", "1h", "--to", "0s", "--consumer", "event-stats", "--type", "nops.agent.registered.v1"}
	out, _ := ok(t, tenant, append(args, "--dry-run")...)
	if !strings.HasPrefix(out, "dry run: would redeliver 3 events to event-stats (3 matched between ") {
		t.Fatalf("dry run:\n%s", out)
	}
	out, errOut = ok(t, tenant, append(args, "--limit", "1", "-o", "json")...)
	var sum replaySummary
	if err := json.Unmarshal([]byte(out), &sum); err != nil || sum.Matched != 3 || sum.Redelivered != 3 || sum.Calls < 3 {
		t.Fatalf("replay --limit 1: %v\n%s", err, out)
	}
	if strings.Count(errOut, "replayed up to ") != sum.Calls {
		t.Fatalf("progress lines:\n%s", errOut)
	}
	// Delivered again, applied once: the count stays 3 once the consumer has settled them.
	kerneltest.WaitFor(t, 30*time.Second, "the consumer's backlog drained", func() bool {
		code, out, _ := runCLI(t, admin, "events", "consumers")
		return code == 0 && regexp.MustCompile(`(?m)^event-stats\s+active\s+0\s+0$`).MatchString(out)
	})
	if out, _ := ok(t, tenant, "events", "stats"); !counted.MatchString(out) {
		t.Fatalf("after the replay:\n%s", out)
	}

	_, errOut = fails(t, tenant, "events", "replay", "--from", "1h", "--to", "0s", "--consumer", "nobody")
	if !regexp.MustCompile(`\(body\.consumer: not a consumer of this kernel; one of: event-stats, invocations\)`).MatchString(errOut) {
		t.Fatalf("unknown consumer: %q", errOut)
	}
	_, errOut = fails(t, tenant, "events", "replay", "--from", "1h", "--to", "0s")
	if !strings.Contains(errOut, `"consumer" not set`) {
		t.Fatalf("missing --consumer: %q", errOut)
	}
}

// mustOut runs the CLI, requires success and returns its stdout.
func mustOut(t *testing.T, env map[string]string, args ...string) string {
	t.Helper()
	out, _ := ok(t, env, args...)
	return out
}
