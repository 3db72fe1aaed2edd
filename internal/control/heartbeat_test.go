package control_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/control"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/events"
	"github.com/nops-kernel/nops/internal/registry"
	"github.com/nops-kernel/nops/internal/tenant"
)

// TestHeartbeatGroupCommit sends many heartbeats at once through group commit: every heartbeat
// of a known agent is applied with exactly one event, an unknown agent's heartbeat fails alone,
// and none is lost.
func TestHeartbeatGroupCommit(t *testing.T) {
	c, st, ctx := setupWith(t, control.Options{HeartbeatBatch: 16})
	runCtx, stop := context.WithCancel(context.Background())
	var runWG sync.WaitGroup
	runWG.Go(func() { _ = c.RunHeartbeats(runCtx, 2) })
	defer func() { stop(); runWG.Wait() }()

	ten, err := c.CreateTenant(ctx, tenant.CreateInput{Name: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 10 {
		a, err := c.RegisterAgent(ctx, ten.ID, registry.AgentInput{Name: fmt.Sprintf("a%d", i), Version: "1.0.0", Endpoint: "https://a.example"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, a.ID)
	}
	const perAgent = 20
	var wg sync.WaitGroup
	errsSeen := make(chan error, 10*perAgent+perAgent)
	for _, id := range ids {
		for range perAgent {
			wg.Go(func() {
				res, err := c.Heartbeat(ctx, ten.ID, id, registry.HeartbeatInput{})
				if err == nil && res.AgentID != id {
					err = fmt.Errorf("answer for %s given to %s", res.AgentID, id)
				}
				errsSeen <- err
			})
		}
	}
	unknown := 0
	for range perAgent {
		wg.Go(func() {
			_, err := c.Heartbeat(ctx, ten.ID, "agt_01jz8y3w6v6r3b5q8x9k2m4n7q", registry.HeartbeatInput{})
			if errs.CodeOf(err) != errs.NotFound {
				errsSeen <- fmt.Errorf("unknown agent: %v, want NotFound", err)
				return
			}
			errsSeen <- nil
		})
		unknown++
	}
	wg.Wait()
	close(errsSeen)
	for err := range errsSeen {
		if err != nil {
			t.Error(err)
		}
	}
	pending, err := st.PendingOutbox(ctx, 10000)
	if err != nil {
		t.Fatal(err)
	}
	beats := 0
	for _, r := range pending {
		if r.Type == events.TypeAgentHeartbeat {
			beats++
		}
	}
	if beats != len(ids)*perAgent {
		t.Fatalf("%d heartbeat events for %d applied heartbeats", beats, len(ids)*perAgent)
	}
}

// TestHeartbeatGroupCommitShutdown: a heartbeat queued while the workers stop is answered (by
// the final drain, with Unavailable), never left hanging.
func TestHeartbeatGroupCommitShutdown(t *testing.T) {
	c, _, ctx := setupWith(t, control.Options{HeartbeatBatch: 4})
	runCtx, stop := context.WithCancel(context.Background())
	stop() // stopped workers: every run only drains the queue
	callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	got := make(chan error, 1)
	go func() {
		_, err := c.Heartbeat(callCtx, "ten_01jz8y3w6v6r3b5q8x9k2m4n7q", "agt_01jz8y3w6v6r3b5q8x9k2m4n7q", registry.HeartbeatInput{})
		got <- err
	}()
	for {
		_ = c.RunHeartbeats(runCtx, 1)
		select {
		case err := <-got:
			if errs.CodeOf(err) != errs.Unavailable {
				t.Fatalf("heartbeat queued at shutdown: %v, want Unavailable", err)
			}
			return
		case <-time.After(10 * time.Millisecond): // the request may not be queued yet: drain again
		}
	}
}
