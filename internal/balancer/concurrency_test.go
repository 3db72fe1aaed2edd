package balancer_test

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/balancer"
)

// TestConcurrentUse: many goroutines picking, beginning and ending calls (some failing, so
// agents get ejected and re-admitted), while others read state and forget an agent. Run with
// -race; no skipped agent is returned and every in-flight count returns to 0 (an Attempt ends
// on the state it began on, even when Forget dropped that state meanwhile).
func TestConcurrentUse(t *testing.T) {
	clk := newClock()
	b := balancer.New(balancer.Config{
		Now: clk.Now, EjectAfter: 3, EjectBase: time.Millisecond, RampUp: time.Millisecond,
		OnEject: func(balancer.Candidate, time.Time) {}, OnReadmit: func(balancer.Candidate) {},
	})
	cs := cands(1, 2, 3, 4, 5, 6)
	const workers, calls = 8, 2000
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 7))
			var held []*balancer.Attempt
			for i := range calls {
				var c balancer.Candidate
				var ok bool
				if i%3 == 0 {
					c, ok = b.PickSticky(fmt.Sprint("k", i), cs, nil)
				} else {
					c, ok = b.Pick(cs, func(id string) bool { return id == "agt_5" })
				}
				if !ok {
					continue // all ejected at the moment
				}
				if c.AgentID == "agt_5" && i%3 != 0 {
					errc <- fmt.Errorf("skipped agent returned")
					return
				}
				held = append(held, b.Begin(c))
				if len(held) > 4 || r.IntN(2) == 0 {
					a := held[0]
					held = held[1:]
					a.End(balancer.Outcome{Latency: time.Duration(1+r.IntN(50)) * time.Millisecond, Failure: c.AgentID == "agt_0" || r.IntN(10) == 0, Ignore: r.IntN(20) == 0})
					a.End(balancer.Outcome{}) // idempotent under concurrency too
				}
				if i%100 == 0 {
					clk.Advance(time.Millisecond)
				}
			}
			for _, a := range held {
				a.End(balancer.Outcome{})
			}
		})
	}
	wg.Go(func() {
		for i := range calls {
			_ = b.State(cs[i%len(cs)].AgentID)
			_ = b.Scores(cs)
			_ = b.InFlight(cs[i%len(cs)].AgentID)
			if i%50 == 0 {
				b.Forget("agt_4")
			}
		}
	})
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	for _, c := range cs {
		if got := b.InFlight(c.AgentID); got != 0 {
			t.Errorf("InFlight(%s) = %d after all calls ended, want 0", c.AgentID, got)
		}
	}
}
