package nops_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
	"github.com/nops-kernel/nops/sdk/go/nops"
)

// agentKey creates another ADMIN key of the fixture's tenant (one an agent may rotate) and
// returns it raw with its ID.
func (f *fixture) agentKey(t *testing.T, name string) (raw, id string) {
	t.Helper()
	resp, body := f.k.Do(t, "POST", "/v1/api-keys", map[string]any{"name": name, "role": "ADMIN"}, "X-API-Key: "+f.apiKey)
	mustStatus(t, resp, body, http.StatusCreated)
	raw = decode[struct {
		Secret string `json:"secret"`
	}](t, body).Secret
	id, _, _ = strings.Cut(strings.TrimPrefix(raw, "nops_"), "_")
	return raw, id
}

// forceRotate has the tenant's administrator require key id to be rotated within deadline.
func (f *fixture) forceRotate(t *testing.T, id, deadline string) {
	t.Helper()
	resp, body := f.k.Do(t, "POST", "/v1/admin/api-keys/"+id+"/force-rotate", map[string]string{"deadline": deadline}, "X-API-Key: "+f.apiKey)
	mustStatus(t, resp, body, http.StatusOK)
}

// rotateByOf returns the key's rotate_by as the kernel reports it ("" when none).
func (f *fixture) rotateByOf(t *testing.T, id string) string {
	t.Helper()
	resp, body := f.k.Do(t, "GET", "/v1/api-keys/"+id, nil, "X-API-Key: "+f.apiKey)
	mustStatus(t, resp, body, http.StatusOK)
	return decode[struct {
		RotateBy string `json:"rotate_by"`
	}](t, body).RotateBy
}

// TestAgentRotatesKeyWhenForced: an administrator force-rotates the key of an agent serving
// traffic; the agent rotates it by itself, once, without a failed call; the kernel's key has no
// deadline any more, the callback got the new key, and the old one is refused after the grace.
func TestAgentRotatesKeyWhenForced(t *testing.T) {
	f := newFixture(t)
	oldKey, keyID := f.agentKey(t, "auto-rotating")
	c := f.client(t, nops.Options{APIKey: oldKey})
	var events []nops.KeyRotationEvent
	var evMu sync.Mutex
	got := make(chan string, 4)
	const grace = 2 * time.Second
	a, err := nops.NewAgent(c, nops.AgentConfig{
		Name: "auto-rotating", Version: "1.0.0", HeartbeatInterval: 20 * time.Millisecond,
		Capabilities:  []nops.Capability{echoCapability(nil)},
		RotationGrace: grace,
		OnKeyRotated:  func(k string) { got <- k },
		Hooks: nops.Hooks{OnKeyRotation: func(e nops.KeyRotationEvent) {
			evMu.Lock()
			events = append(events, e)
			evMu.Unlock()
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	stop := startAgent(t, a)

	var ok, failed atomic.Int64
	var firstErr atomic.Value
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				if _, err := c.Invoke(context.Background(), "echo", []byte(`{"message":"x"}`), nil); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				ok.Add(1)
			}
		})
	}
	kerneltest.WaitFor(t, 30*time.Second, "traffic before the deadline", func() bool { return ok.Load() >= 40 })
	// Nothing changes without a deadline.
	if c.APIKey() != oldKey {
		t.Fatalf("the client's key changed before any deadline")
	}
	f.forceRotate(t, keyID, "1h")
	var newKey string
	select {
	case newKey = <-got:
	case <-time.After(30 * time.Second):
		t.Fatal("the agent did not rotate its key within 30 s of the deadline being set")
	}
	rotatedAt := ok.Load()
	kerneltest.WaitFor(t, 30*time.Second, "traffic after the rotation", func() bool { return ok.Load() >= rotatedAt+40 })
	close(done)
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of %d calls failed; first: %v", n, n+ok.Load(), firstErr.Load())
	}
	if newKey == oldKey || newKey != c.APIKey() || !strings.HasPrefix(newKey, "nops_"+keyID+"_") {
		t.Fatalf("callback key: same as old %v, same as the client's %v", newKey == oldKey, newKey == c.APIKey())
	}
	if by := f.rotateByOf(t, keyID); by != "" {
		t.Fatalf("the key still has rotate_by %s after the rotation", by)
	}
	evMu.Lock()
	evs := append([]nops.KeyRotationEvent(nil), events...)
	evMu.Unlock()
	if len(evs) != 1 || evs[0].Err != nil || evs[0].KeyID != keyID || evs[0].Grace != grace || evs[0].OldValidUntil.IsZero() ||
		time.Until(evs[0].RotateBy) < 50*time.Minute {
		t.Fatalf("rotation events %+v, want one successful rotation of %s with a %s grace", evs, keyID, grace)
	}
	select {
	case k := <-got:
		t.Fatalf("a second rotation handed over %q", k)
	default:
	}
	kerneltest.WaitFor(t, 30*time.Second, "old key refused", func() bool {
		resp, _ := f.k.Do(t, "GET", "/v1/agents", nil, "X-API-Key: "+oldKey)
		return resp.StatusCode == http.StatusUnauthorized
	})
	resp, body := f.k.Do(t, "GET", "/v1/agents", nil, "X-API-Key: "+newKey)
	mustStatus(t, resp, body, http.StatusOK)
	if h := resp.Header.Get(nops.HeaderAPIKeyRotateBy); h != "" {
		t.Fatalf("the new key is still told to rotate by %s", h)
	}
	t.Logf("%d calls, %d after the rotation, 0 failed; rotation took %s", ok.Load(), ok.Load()-rotatedAt, evs[0].Duration)
	if err := stop(); err != nil {
		t.Fatalf("agent run: %v", err)
	}
}

// TestAgentAutoRotateDisabled: with DisableAutoRotate the agent leaves a force-rotated key
// alone; the kernel keeps its deadline.
func TestAgentAutoRotateDisabled(t *testing.T) {
	f := newFixture(t)
	oldKey, keyID := f.agentKey(t, "manual")
	c := f.client(t, nops.Options{APIKey: oldKey})
	var rotations atomic.Int64
	var heartbeats atomic.Int64
	a, err := nops.NewAgent(c, nops.AgentConfig{
		Name: "manual", Version: "1.0.0", HeartbeatInterval: 20 * time.Millisecond,
		Capabilities:      []nops.Capability{echoCapability(nil)},
		DisableAutoRotate: true,
		OnKeyRotated:      func(string) { rotations.Add(1) },
		Hooks: nops.Hooks{
			OnKeyRotation: func(nops.KeyRotationEvent) { rotations.Add(1) },
			OnHeartbeat: func(e nops.HeartbeatEvent) {
				if e.Err == nil {
					heartbeats.Add(1)
				}
			},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	stop := startAgent(t, a)
	f.forceRotate(t, keyID, "1h")
	res, err := c.Invoke(context.Background(), "echo", []byte(`{"message":"x"}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Header.Get(nops.HeaderAPIKeyRotateBy) == "" {
		t.Fatalf("the kernel did not announce the deadline")
	}
	// Many answers carrying the deadline later, nothing has been rotated.
	n := heartbeats.Load()
	kerneltest.WaitFor(t, 30*time.Second, "heartbeats after the deadline", func() bool { return heartbeats.Load() >= n+20 })
	if err := stop(); err != nil {
		t.Fatalf("agent run: %v", err)
	}
	if rotations.Load() != 0 || c.APIKey() != oldKey || f.rotateByOf(t, keyID) == "" {
		t.Fatalf("with DisableAutoRotate: %d rotation callbacks, key changed %v, deadline %q", rotations.Load(), c.APIKey() != oldKey, f.rotateByOf(t, keyID))
	}
}
