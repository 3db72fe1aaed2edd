package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/events"
	"github.com/nops-kernel/nops/internal/kernel"
	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
	"github.com/nops-kernel/nops/internal/testutil/faultproxy"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

// TestBusOutageBuffersInOutbox cuts the external bus (NATS, then Redis Streams) with a fault
// proxy while clients keep changing the registry: the changes succeed (their events wait in the
// outbox), /_readyz reports the outage, and once the bus is back the kernel reconnects by itself
// and publishes every event exactly once, in order per agent.
func TestBusOutageBuffersInOutbox(t *testing.T) {
	buses := []struct {
		name  string
		setup func(t *testing.T, c *config.Config) *faultproxy.Proxy
	}{
		{"nats", func(t *testing.T, c *config.Config) *faultproxy.Proxy {
			u, ns := services.NATSNamespace(t)
			p := faultproxy.New(t, services.HostPort(t, u))
			c.Bus.NATSURL, c.Bus.Namespace = services.WithHost(t, u, p.Addr()), ns
			return p
		}},
		{"redis", func(t *testing.T, c *config.Config) *faultproxy.Proxy {
			u, ns := services.RedisNamespace(t)
			p := faultproxy.New(t, services.HostPort(t, u))
			c.Bus.Kind, c.Redis.URL, c.Bus.Namespace = "redis", services.WithHost(t, u, p.Addr()), ns
			// Idempotency records in the database: this test is about the bus alone.
			c.Idempotency.Store = "sql"
			return p
		}},
	}
	for _, b := range buses {
		t.Run(b.name, func(t *testing.T) {
			var proxy *faultproxy.Proxy
			f := newFixture(t, func(c *config.Config) {
				proxy = b.setup(t, c)
				c.Health.CacheTTL = config.Duration(250 * time.Millisecond)
				c.Health.CheckTimeout = config.Duration(time.Second)
				c.Outbox.LeaseTTL = config.Duration(2 * time.Second)
			})
			k := f.k
			register := func(name string) string {
				resp, body := k.Do(t, "POST", "/v1/agents", agentSpec(name), f.keys["ADMIN"])
				mustStatus(t, resp, body, http.StatusCreated)
				return decode[agentDoc](t, body).ID
			}
			var ids []string
			for i := range 5 {
				ids = append(ids, register(fmt.Sprintf("before-%d", i)))
			}

			proxy.Cut()
			kerneltest.WaitFor(t, 10*time.Second, "/_readyz reports the bus outage", func() bool {
				return readyStatus(t, k) == http.StatusServiceUnavailable
			})
			for i := range 20 {
				ids = append(ids, register(fmt.Sprintf("during-%d", i)))
			}
			st, err := kernel.OpenStore(context.Background(), k.Config, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			backlog, err := st.OutboxBacklog(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if backlog.Pending == 0 {
				t.Fatal("no event waits in the outbox during the bus outage")
			}
			t.Logf("%d events wait in the outbox during the outage", backlog.Pending)

			restored := time.Now()
			proxy.Restore()
			kerneltest.WaitFor(t, 30*time.Second, "the outbox drains after the bus returns", func() bool {
				b, err := st.OutboxBacklog(context.Background())
				return err == nil && b.Pending == 0
			})
			t.Logf("outbox drained %s after the bus returned", time.Since(restored).Round(time.Millisecond))
			kerneltest.WaitFor(t, 10*time.Second, "/_readyz is ready again", func() bool {
				return readyStatus(t, k) == http.StatusOK
			})

			registered := map[string]int{}
			for _, ev := range streamEvents(t, k) {
				if ev.Type == events.TypeAgentRegistered {
					registered[ev.Subject]++
				}
			}
			for _, id := range ids {
				if n := registered[events.AgentSubject(id)]; n != 1 {
					t.Errorf("agent %s: %d agent.registered events on the bus, want 1", id, n)
				}
			}
		})
	}
}
