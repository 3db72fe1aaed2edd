package natsbus

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/bus/natsbus/natstest"
)

// TestClusterLeaderFailover: a 3-node JetStream cluster with replicated (R3) streams loses the
// stream leader under load. Publishing resumes by itself and nothing acknowledged is lost.
func TestClusterLeaderFailover(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	b := open(t, Config{URL: c.URLs(), Namespace: "failover", Replicas: 3, PublishTimeout: time.Second, ConnectTimeout: 20 * time.Second})
	// A guard against a hang, not a measurement: a 3-node cluster on a loaded 2-CPU machine
	// (CI runs packages in parallel) can take longer than ctxT's 10 s for the whole scenario.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	info, err := b.events.Info(ctx)
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("events stream: %d replicas, cluster %+v; want R3", info.Config.Replicas, info.Cluster)
	}
	got := newCollector()
	subscribe(t, b, "failover", got.handle)

	type result struct {
		id         string
		start, end time.Time
		err        error
	}
	var (
		mu      sync.Mutex
		results []result
		stop    = make(chan struct{})
		done    = make(chan struct{})
	)
	acked := func(after time.Time) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, r := range results {
			if r.err == nil && r.start.After(after) {
				n++
			}
		}
		return n
	}
	// Publishers: batches of 10 from two goroutines, each publish bounded so that a publish
	// stuck on the old leader gives way to the next one.
	var wg sync.WaitGroup
	for p := range 2 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				msgs := testMsgs(fmt.Sprintf("p%d-%d", p, i), 10)
				pctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
				start := time.Now()
				err := b.Publish(pctx, msgs...)
				end := time.Now()
				cancel()
				mu.Lock()
				for _, m := range msgs {
					results = append(results, result{m.ID, start, end, err})
				}
				mu.Unlock()
			}
		})
	}
	go func() { wg.Wait(); close(done) }()

	waitFor(t, "publishing before the failover", func() bool { return acked(time.Time{}) >= 500 })
	info, err = b.events.Info(ctx)
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	leader := info.Cluster.Leader
	killed := time.Now()
	c.Shutdown(leader)
	down := time.Now()
	t.Logf("stream leader %s shut down in %s", leader, down.Sub(killed))

	// Recovery: the first publish started after the leader was gone that succeeded.
	deadline := time.Now().Add(30 * time.Second)
	var recovered time.Time
	for recovered.IsZero() {
		mu.Lock()
		for _, r := range results {
			if r.err == nil && !r.start.Before(down) && (recovered.IsZero() || r.end.Before(recovered)) {
				recovered = r.end
			}
		}
		mu.Unlock()
		if time.Now().After(deadline) {
			close(stop)
			<-done
			t.Fatalf("no successful publish within 30 s of the leader's loss")
		}
		time.Sleep(5 * time.Millisecond)
	}
	recovery := recovered.Sub(killed)
	t.Logf("publishing succeeded again %s after the leader was shut down (goal < 3 s)", recovery)
	if recovery > 30*time.Second {
		t.Errorf("publishing resumed only %s after the leader's loss", recovery)
	}
	waitFor(t, "publishing after the failover", func() bool { return acked(recovered) >= 500 })
	close(stop)
	<-done

	info, err = b.events.Info(ctx)
	if err != nil {
		t.Fatalf("stream info after the failover: %v", err)
	}
	t.Logf("new stream leader %s", info.Cluster.Leader)
	mu.Lock()
	var want []string
	failed := 0
	for _, r := range results {
		if r.err == nil {
			want = append(want, r.id)
		} else {
			failed++
		}
	}
	mu.Unlock()
	// Every acknowledged event is in the stream…
	stored := map[string]bool{}
	if _, err := b.Replay(ctx, time.Time{}, time.Time{}, bus.Filter{}, func(s bus.Stored) error {
		stored[s.ID] = true
		return nil
	}); err != nil {
		t.Fatalf("Replay: %v", err)
	}
	var missing []string
	for _, id := range want {
		if !stored[id] {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("%d acknowledged events are not in the stream, e.g. %v", len(missing), missing[:min(5, len(missing))])
	}
	// …and consumed.
	got.waitAll(t, want)
	t.Logf("%d events acknowledged and consumed, %d publishes failed during the failover, 0 lost", len(want), failed)
	if n := len(slices.Compact(slices.Sorted(slices.Values(got.all())))); n < len(want) {
		t.Errorf("%d distinct events consumed, want at least %d", n, len(want))
	}
}
