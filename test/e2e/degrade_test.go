package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/events"
	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
	"github.com/nops-kernel/nops/internal/testutil/faultproxy"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

type statusDoc struct {
	Status string `json:"status"`
	Modes  []struct {
		Mode    string `json:"mode"`
		Active  bool   `json:"active"`
		Trigger string `json:"trigger"`
		Reason  string `json:"reason"`
	} `json:"modes"`
}

// activeModes reads GET /v1/status: the active modes and their triggers.
func activeModes(t *testing.T, k *kerneltest.Kernel) map[string]string {
	t.Helper()
	resp, body := k.Do(t, "GET", "/v1/status", nil)
	mustStatus(t, resp, body, http.StatusOK)
	out := map[string]string{}
	for _, m := range decode[statusDoc](t, body).Modes {
		if m.Active {
			out[m.Mode] = m.Trigger
		}
	}
	return out
}

// fastDegrade makes the modes react within a fraction of a second.
func fastDegrade(c *config.Config) {
	c.Health.CacheTTL = config.Duration(100 * time.Millisecond)
	c.Health.CheckTimeout = config.Duration(time.Second)
	c.Health.DegradeInterval = config.Duration(100 * time.Millisecond)
	c.Health.DegradeRecover = 2
	c.Outbox.LeaseTTL = config.Duration(2 * time.Second)
	c.Egress.AllowLoopback = "true" // the test's agents listen on loopback
}

// degradationEvents returns the mode changes on the bus, as "mode change trigger", in the order
// of their changed_at: an event published on the bus directly (the database refused the outbox)
// can overtake one still waiting in the outbox, so consumers order them by time.
func degradationEvents(t *testing.T, evs []events.Event) []string {
	t.Helper()
	var changes []events.DegradationChanged
	for _, ev := range evs {
		if ev.Type != events.TypeDegradationChanged {
			continue
		}
		var p events.DegradationChanged
		if err := json.Unmarshal(ev.Data, &p); err != nil {
			t.Fatalf("degradation event data: %v", err)
		}
		if ev.TraceParent == "" {
			t.Errorf("degradation event %s carries no trace context", ev.ID)
		}
		changes = append(changes, p)
	}
	slices.SortStableFunc(changes, func(a, b events.DegradationChanged) int { return a.ChangedAt.Compare(b.ChangedAt) })
	var out []string
	for _, p := range changes {
		out = append(out, p.Mode+" "+p.Change+" "+p.Trigger)
	}
	return out
}

// waitBilling waits until the bus carries one billing.usage event per accepted invocation (a
// synchronous call's events reach the outbox through the batching recorder, a moment after the
// answer) and returns the published events; it fails when they do not all arrive.
func waitBilling(t *testing.T, k *kerneltest.Kernel, accepted int) []events.Event {
	t.Helper()
	var evs []events.Event
	n := 0
	kerneltest.WaitFor(t, 20*time.Second, fmt.Sprintf("%d billing.usage events", accepted), func() bool {
		evs = publishedEvents(t, k)
		n = countType(evs, events.TypeBillingUsage)
		return n >= accepted
	})
	if n != accepted {
		t.Errorf("%d billing.usage events for %d accepted invocations", n, accepted)
	}
	return evs
}

func countType(evs []events.Event, typ events.Type) int {
	n := 0
	for _, ev := range evs {
		if ev.Type == typ {
			n++
		}
	}
	return n
}

// degradationAudit returns the global audit trail's degradation.change records' reasons.
func degradationAudit(t *testing.T, f *fixture) []string {
	t.Helper()
	resp, body := f.k.Do(t, "GET", "/v1/audit?action=degradation.change", nil, f.admin)
	mustStatus(t, resp, body, http.StatusOK)
	var out []string
	for _, it := range decode[auditPage](t, body).Items {
		out = append(out, it.Resource+": "+it.Decision.Reason)
	}
	return out
}

// wantUnavailable checks a refusal by a degraded mode: 503 problem+json with Retry-After.
func wantUnavailable(t *testing.T, resp *http.Response, body []byte, detail string) {
	t.Helper()
	wantProblem(t, resp, body, http.StatusServiceUnavailable, "unavailable", detail)
	if resp.Header.Get("Retry-After") == "" {
		t.Errorf("a 503 of a degraded mode without Retry-After: %s", body)
	}
}

// setDatabaseReadOnly makes new sessions of the test's database refuse writes (what a failover
// to a standby or a full disk does), over a direct connection; the kernel reaches the database
// through the fault proxy, whose Cut and Restore then drop its pooled sessions.
func setDatabaseReadOnly(t *testing.T, dbURL string, on bool) {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimPrefix(u.Path, "/")
	u.Path = "/postgres"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, fmt.Sprintf("ALTER DATABASE %s SET default_transaction_read_only = %v", pgx.Identifier{name}.Sanitize(), on)); err != nil {
		t.Fatal(err)
	}
}

// TestDegradedReadOnly: PostgreSQL behind a fault proxy starts refusing writes while reads
// still work. The kernel enters read_only by itself: writes and invocations answer 503 with
// Retry-After, reads are served, /healthz and /v1/status show it; once the database takes writes
// again it returns to normal by itself. Every accepted invocation has its billing.usage event
// and every change its audit record; the mode's entry went to the bus directly (the outbox
// could not take it) and its audit record followed.
func TestDegradedReadOnly(t *testing.T) {
	dbURL := services.Postgres(t)
	proxy := faultproxy.New(t, services.HostPort(t, dbURL))
	f := newFixture(t, fastDegrade, func(c *config.Config) {
		c.Database.URL = services.WithHost(t, dbURL, proxy.Addr())
	})
	k, admin := f.k, f.keys["ADMIN"]
	newFleetAgent(t, k, admin, "ro-agent", "ro.op")
	cl := newInvokeClient(t, k, admin)
	accepted := 0
	invoke := func(n int) {
		for range n {
			if r := cl.call("ro.op"); r.status != http.StatusOK {
				t.Fatalf("invocation: %v", r)
			}
			accepted++
		}
	}
	invoke(3)
	resp, body := k.Do(t, "POST", "/v1/agents", agentSpec("before"), admin)
	mustStatus(t, resp, body, http.StatusCreated)

	setDatabaseReadOnly(t, dbURL, true)
	proxy.Cut() // drop the pooled sessions: new ones start read-only
	proxy.Restore()
	kerneltest.WaitFor(t, 15*time.Second, "read_only is entered", func() bool {
		return activeModes(t, k)["read_only"] == "auto"
	})

	resp, body = k.Do(t, "POST", "/v1/agents", agentSpec("during"), admin)
	wantUnavailable(t, resp, body, "read-only mode")
	if r := cl.call("ro.op"); r.status != http.StatusServiceUnavailable {
		t.Errorf("an invocation in read_only mode: %v, want 503", r)
	}
	// Reads are served (once the pool has replaced the sessions the proxy dropped).
	kerneltest.WaitFor(t, 15*time.Second, "reads are served in read_only mode", func() bool {
		resp, _ := k.Do(t, "GET", "/v1/agents", nil, admin)
		return resp.StatusCode == http.StatusOK
	})
	// Every dependency answers again (the checks may still show the moment the proxy dropped
	// the sessions): /healthz is 200 and shows the mode.
	kerneltest.WaitFor(t, 15*time.Second, "/healthz 200 showing read_only", func() bool {
		resp, body := k.Do(t, "GET", "/healthz", nil)
		var hz struct {
			Status      string `json:"status"`
			Degradation []struct {
				Mode string `json:"mode"`
			} `json:"degradation"`
		}
		if err := json.Unmarshal(body, &hz); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode == http.StatusOK && hz.Status == "degraded" && len(hz.Degradation) == 1 && hz.Degradation[0].Mode == "read_only"
	})
	if activeModes(t, k)["read_only"] == "" {
		t.Fatal("read_only left while the database still refuses writes")
	}

	setDatabaseReadOnly(t, dbURL, false)
	proxy.Cut()
	proxy.Restore()
	kerneltest.WaitFor(t, 15*time.Second, "the kernel returns to normal", func() bool {
		return len(activeModes(t, k)) == 0
	})
	resp, body = k.Do(t, "POST", "/v1/agents", agentSpec("after"), admin)
	mustStatus(t, resp, body, http.StatusCreated)
	invoke(2)

	// A full outage (reads fail too): writes are still refused by the mode rather than failing
	// half way, /healthz reports the database down, and the kernel recovers by itself.
	proxy.Cut()
	kerneltest.WaitFor(t, 15*time.Second, "read_only is entered during the outage", func() bool {
		return activeModes(t, k)["read_only"] == "auto"
	})
	resp, body = k.Do(t, "POST", "/v1/agents", agentSpec("outage"), admin)
	wantUnavailable(t, resp, body, "read-only mode")
	kerneltest.WaitFor(t, 15*time.Second, "/healthz reports the database down", func() bool {
		resp, _ := k.Do(t, "GET", "/healthz", nil)
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	proxy.Restore()
	kerneltest.WaitFor(t, 15*time.Second, "the kernel returns to normal after the outage", func() bool {
		return len(activeModes(t, k)) == 0
	})
	resp, body = k.Do(t, "POST", "/v1/agents", agentSpec("after-outage"), admin)
	mustStatus(t, resp, body, http.StatusCreated)
	invoke(1)

	evs := waitBilling(t, k, accepted)
	if n := countType(evs, events.TypeAgentRegistered); n != 4 { // ro-agent, before, after, after-outage
		t.Errorf("%d agent.registered events, want 4 (the refused ones have none)", n)
	}
	want := []string{"read_only entered auto", "read_only left auto", "read_only entered auto", "read_only left auto"}
	if got := degradationEvents(t, evs); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("degradation events %v, want %v", got, want)
	}
	audit := degradationAudit(t, f)
	if len(audit) != 4 || strings.Count(strings.Join(audit, "|"), "event published on the bus directly") != 2 {
		t.Errorf("degradation audit records %q: want two entries (their events sent on the bus directly) and two exits", audit)
	}
}

// TestDegradedBusDown cuts the external NATS with a fault proxy: the kernel enters bus_down,
// keeps serving changes and invocations (their events wait in the outbox), and once the bus is
// back it leaves the mode by itself and every event — billing.usage included — is published.
func TestDegradedBusDown(t *testing.T) {
	var proxy *faultproxy.Proxy
	f := newFixture(t, fastDegrade, func(c *config.Config) {
		u, ns := services.NATSNamespace(t)
		proxy = faultproxy.New(t, services.HostPort(t, u))
		c.Bus.NATSURL, c.Bus.Namespace = services.WithHost(t, u, proxy.Addr()), ns
	})
	k, admin := f.k, f.keys["ADMIN"]
	newFleetAgent(t, k, admin, "bus-agent", "bus.op")
	cl := newInvokeClient(t, k, admin)
	accepted := 0
	invoke := func(n int) {
		for range n {
			if r := cl.call("bus.op"); r.status != http.StatusOK {
				t.Fatalf("invocation: %v", r)
			}
			accepted++
		}
	}
	invoke(2)

	proxy.Cut()
	kerneltest.WaitFor(t, 15*time.Second, "bus_down is entered", func() bool {
		return activeModes(t, k)["bus_down"] == "auto"
	})
	for _, m := range []struct {
		name, label string
		want        float64
	}{
		{"nops_dependency_up", `check="bus"`, 0},
		{"nops_dependency_up", `check="database"`, 1},
		{"nops_degraded_mode", `mode="bus_down"`, 1},
		{"nops_degraded_mode", `mode="read_only"`, 0},
	} {
		if v, err := cl.metric(m.name, m.label); err != nil || v != m.want {
			t.Errorf("%s{%s} = %v (%v), want %v", m.name, m.label, v, err, m.want)
		}
	}
	invoke(5)
	for i := range 3 {
		resp, body := k.Do(t, "POST", "/v1/agents", agentSpec(fmt.Sprintf("during-%d", i)), admin)
		mustStatus(t, resp, body, http.StatusCreated)
	}
	proxy.Restore()
	kerneltest.WaitFor(t, 30*time.Second, "the kernel returns to normal", func() bool {
		return len(activeModes(t, k)) == 0
	})

	evs := waitBilling(t, k, accepted)
	if n := countType(evs, events.TypeAgentRegistered); n != 4 {
		t.Errorf("%d agent.registered events, want 4", n)
	}
	want := []string{"bus_down entered auto", "bus_down left auto"}
	if got := degradationEvents(t, evs); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("degradation events %v, want %v", got, want)
	}
	if audit := degradationAudit(t, f); len(audit) != 2 {
		t.Errorf("degradation audit records %q, want the entry and the exit", audit)
	}
}

// TestDegradedShedBestEffort: overload (requests in flight at the gate's best-effort
// threshold) enters shed_best_effort by itself; best-effort reads answer 503 with Retry-After
// while invocations of critical agents go on and are billed; the mode is left once the load is
// gone. Then the same mode forced by its flag: a capability served only by best-effort agents is
// refused (never reaching its agent) while a critical agent's is served; left when the flag goes
// off.
func TestDegradedShedBestEffort(t *testing.T) {
	f := newFixture(t, fastDegrade, func(c *config.Config) {
		c.Limits.InFlightMax = 8 // best_effort threshold 6, essential 7
	})
	k, admin := f.k, f.keys["ADMIN"]
	slow := newFleetAgentOfClass(t, k, admin, "slow-agent", "critical", "slow.op")
	spare := newFleetAgent(t, k, admin, "spare-agent", "spare.op") // best_effort, the default
	cl := newInvokeClient(t, k, admin)

	slow.setDelay(3*time.Second, 3*time.Second)
	done := make(chan invokeResult, 6)
	for range 6 {
		go func() { done <- cl.call("slow.op") }()
	}
	kerneltest.WaitFor(t, 15*time.Second, "shed_best_effort is entered", func() bool {
		return activeModes(t, k)["shed_best_effort"] == "auto"
	})
	resp, body := k.Do(t, "GET", "/v1/agents", nil, admin)
	wantUnavailable(t, resp, body, "")
	accepted := 0
	for range 6 {
		if r := <-done; r.status != http.StatusOK {
			t.Fatalf("a slow invocation under load: %v", r)
		}
		accepted++
	}
	slow.setDelay(0, 0)
	kerneltest.WaitFor(t, 15*time.Second, "the kernel returns to normal", func() bool {
		return len(activeModes(t, k)) == 0
	})

	// Forced by its flag.
	flag := map[string]any{"type": "boolean", "default_variant": "true", "enabled": true}
	resp, body = k.Do(t, "PUT", "/v1/flags/kernel.degrade.shed_best_effort", flag, f.admin)
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		t.Fatalf("put flag: %d %s", resp.StatusCode, body)
	}
	kerneltest.WaitFor(t, 15*time.Second, "shed_best_effort is forced", func() bool {
		return activeModes(t, k)["shed_best_effort"] == "manual"
	})
	resp, body = k.Do(t, "GET", "/v1/agents", nil, admin)
	wantUnavailable(t, resp, body, "best-effort")
	if r := cl.call("slow.op"); r.status != http.StatusOK {
		t.Errorf("an invocation (critical) while best effort is shed: %v", r)
	}
	accepted++
	resp, body = k.Do(t, "POST", "/v1/invoke/spare.op", map[string]string{}, admin)
	wantUnavailable(t, resp, body, "best-effort")
	if n := spare.hits.Load(); n != 0 {
		t.Errorf("a shed best-effort agent was called %d times", n)
	}
	resp, body = k.Do(t, "GET", "/healthz", nil)
	mustStatus(t, resp, body, http.StatusOK)
	resp, body = k.Do(t, "DELETE", "/v1/flags/kernel.degrade.shed_best_effort", nil, f.admin)
	mustStatus(t, resp, body, http.StatusNoContent)
	kerneltest.WaitFor(t, 15*time.Second, "the kernel returns to normal", func() bool {
		return len(activeModes(t, k)) == 0
	})
	resp, body = k.Do(t, "GET", "/v1/agents", nil, admin)
	mustStatus(t, resp, body, http.StatusOK)
	if r := cl.call("spare.op"); r.status != http.StatusOK {
		t.Errorf("the best-effort agent after the mode: %v", r)
	}
	accepted++

	evs := waitBilling(t, k, accepted)
	want := []string{"shed_best_effort entered auto", "shed_best_effort left auto", "shed_best_effort entered manual", "shed_best_effort left manual"}
	if got := degradationEvents(t, evs); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("degradation events %v, want %v", got, want)
	}
	if audit := degradationAudit(t, f); len(audit) != 4 {
		t.Errorf("degradation audit records %q, want 4", audit)
	}
}
