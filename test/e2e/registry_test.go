package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/events"
	"github.com/nops-kernel/nops/internal/kernel"
	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
	"github.com/nops-kernel/nops/internal/registry"
)

// TestZombieExclusion lets an agent's heartbeats lapse: the sweeper moves it healthy → stale →
// zombie with an event each, the registry's routing query stops returning it, and one heartbeat
// brings it back.
func TestZombieExclusion(t *testing.T) {
	forEachStore(t, func(t *testing.T, store func(*config.Config)) {
		ttl := registry.TTLs{Stale: 400 * time.Millisecond, Zombie: 800 * time.Millisecond}
		f := newFixture(t, store, func(c *config.Config) {
			c.Registry.StaleAfter = config.Duration(ttl.Stale)
			c.Registry.ZombieAfter = config.Duration(ttl.Zombie)
			c.Registry.SweepInterval = config.Duration(100 * time.Millisecond)
		})
		k := f.k
		resp, body := k.Do(t, "POST", "/v1/agents", agentSpec("lapsing"), f.keys["ADMIN"])
		mustStatus(t, resp, body, http.StatusCreated)
		id := decode[agentDoc](t, body).ID

		// The routing query, on the kernel's own store with the kernel's rule.
		st, err := kernel.OpenStore(context.Background(), k.Config, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		reg, err := registry.NewService(st, registry.Config{TTL: ttl})
		if err != nil {
			t.Fatal(err)
		}
		routable := func() bool {
			agents, err := reg.Routable(context.Background(), f.tenant, "text.summarize")
			if err != nil {
				t.Fatal(err)
			}
			return len(agents) == 1 && agents[0].ID == id
		}
		if !routable() {
			t.Fatal("a fresh agent is not routable")
		}
		status := func() string {
			resp, body := k.Do(t, "GET", "/v1/agents/"+id, nil, f.keys["VIEWER"])
			mustStatus(t, resp, body, http.StatusOK)
			return decode[agentDoc](t, body).Status
		}
		kerneltest.WaitFor(t, 15*time.Second, "agent turns zombie", func() bool { return status() == "zombie" })
		if routable() {
			t.Fatal("a zombie agent is routable")
		}
		kerneltest.WaitFor(t, 15*time.Second, "the sweeper announces stale and zombie", func() bool {
			seen := map[string]bool{}
			for _, ev := range streamEvents(t, k) {
				if ev.Type == events.TypeAgentStatusChanged && ev.Subject == events.AgentSubject(id) {
					p, err := ev.Payload()
					if err != nil {
						t.Fatal(err)
					}
					ch := p.(events.AgentStatusChanged)
					seen[ch.From+"→"+ch.To] = true
				}
			}
			return seen["healthy→stale"] && seen["stale→zombie"]
		})

		// Suspending the tenant takes even a healthy agent out of routing.
		resp, body = k.Do(t, "POST", "/v1/agents/"+id+"/heartbeat", nil, f.keys["OPERATOR"])
		mustStatus(t, resp, body, http.StatusOK)
		if !routable() {
			t.Fatal("a heartbeat did not bring the agent back")
		}
		resp, body = k.Do(t, "POST", "/v1/tenants/"+f.tenant+"/suspend", nil, f.admin)
		mustStatus(t, resp, body, http.StatusOK)
		if routable() {
			t.Fatal("an agent of a suspended tenant is routable")
		}
	})
}

// TestConcurrentRegistry runs 50 clients registering, heartbeating, updating and deregistering
// agents of one tenant at once, then requires a consistent registry, a verifying audit log and
// exactly one outbox event per committed change.
func TestConcurrentRegistry(t *testing.T) {
	forEachStore(t, func(t *testing.T, store func(*config.Config)) {
		f := newFixture(t, store)
		k := f.k
		const workers = 50
		type result struct {
			id        string
			updates   int
			beats     int
			deleted   bool
			registers int
		}
		results := make([]result, workers)
		var wg sync.WaitGroup
		for i := range workers {
			wg.Go(func() {
				r := &results[i]
				resp, body := k.Do(t, "POST", "/v1/agents", agentSpec(fmt.Sprintf("worker-%02d", i)), f.keys["ADMIN"])
				if resp.StatusCode != http.StatusCreated {
					t.Errorf("register %d: %d %s", i, resp.StatusCode, body)
					return
				}
				r.registers++
				r.id = decode[agentDoc](t, body).ID
				etag := resp.Header.Get("ETag")
				for j := range 3 {
					resp, body := k.Do(t, "POST", "/v1/agents/"+r.id+"/heartbeat", map[string]any{"in_flight": j}, f.keys["OPERATOR"])
					if resp.StatusCode != http.StatusOK {
						t.Errorf("heartbeat: %d %s", resp.StatusCode, body)
						return
					}
					r.beats++
					spec := agentSpec(fmt.Sprintf("worker-%02d", i))
					spec["version"] = fmt.Sprintf("1.%d.0", j+1)
					resp, body = k.Do(t, "PUT", "/v1/agents/"+r.id, spec, f.keys["ADMIN"], "If-Match: "+etag)
					if resp.StatusCode != http.StatusOK {
						t.Errorf("update: %d %s", resp.StatusCode, body)
						return
					}
					r.updates++
					etag = resp.Header.Get("ETag")
				}
				if i%3 == 0 {
					resp, body := k.Do(t, "DELETE", "/v1/agents/"+r.id, nil, f.keys["ADMIN"])
					if resp.StatusCode != http.StatusNoContent {
						t.Errorf("delete: %d %s", resp.StatusCode, body)
						return
					}
					r.deleted = true
				}
			})
		}
		wg.Wait()
		if t.Failed() {
			return
		}

		perAgent := map[string]map[events.Type]int{}
		for _, rec := range publishedEvents(t, k) {
			id, ok := strings.CutPrefix(rec.Subject, "agents/")
			if !ok {
				continue
			}
			if perAgent[id] == nil {
				perAgent[id] = map[events.Type]int{}
			}
			perAgent[id][rec.Type]++
		}
		for _, r := range results {
			want := map[events.Type]int{events.TypeAgentRegistered: r.registers, events.TypeAgentHeartbeat: r.beats, events.TypeAgentUpdated: r.updates}
			if r.deleted {
				want[events.TypeAgentDeregistered] = 1
			}
			for typ, n := range want {
				if got := perAgent[r.id][typ]; got != n {
					t.Errorf("agent %s: %d %s events for %d committed changes", r.id, got, typ, n)
				}
			}
			// The registry agrees with what the clients saw.
			resp, body := k.Do(t, "GET", "/v1/agents/"+r.id, nil, f.keys["VIEWER"])
			switch {
			case r.deleted && resp.StatusCode != http.StatusNotFound:
				t.Errorf("deleted agent %s: %d", r.id, resp.StatusCode)
			case !r.deleted && resp.StatusCode != http.StatusOK:
				t.Errorf("agent %s: %d %s", r.id, resp.StatusCode, body)
			case !r.deleted && decode[agentDoc](t, body).Revision != int64(r.updates+1):
				t.Errorf("agent %s revision %s, want %d", r.id, body, r.updates+1)
			}
		}
		resp, body := k.Do(t, "GET", "/v1/audit/verify", nil, f.keys["ADMIN"])
		mustStatus(t, resp, body, http.StatusOK)
		if !strings.Contains(string(body), `"ok":true`) {
			t.Fatalf("audit log does not verify after the concurrent run: %s", body)
		}
		resp, body = k.Do(t, "GET", "/v1/audit?action=agent.update&limit=500", nil, f.keys["ADMIN"])
		mustStatus(t, resp, body, http.StatusOK)
		if n := len(decode[auditPage](t, body).Items); n != workers*3 {
			t.Errorf("%d agent.update audit records, want %d", n, workers*3)
		}
	})
}
