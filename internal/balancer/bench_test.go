package balancer_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/balancer"
)

// The per-invocation cost: one Pick (or PickSticky), Begin and End over n candidates that all
// have samples. Run: go test -run '^$' -bench . -benchmem ./internal/balancer/
func BenchmarkPickBeginEnd(b *testing.B) {
	for _, n := range []int{3, 10} {
		for _, mode := range []string{"dynamic", "static", "sticky"} {
			b.Run(fmt.Sprintf("%s/%d", mode, n), func(b *testing.B) {
				bl := balancer.New(balancer.Config{Static: mode == "static"})
				cs := benchCands(bl, n)
				keys := make([]string, 1024)
				for i := range keys {
					keys[i] = fmt.Sprint("user-", i)
				}
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					var c balancer.Candidate
					if mode == "sticky" {
						c, _ = bl.PickSticky(keys[i%len(keys)], cs, nil)
					} else {
						c, _ = bl.Pick(cs, nil)
					}
					bl.Begin(c).End(balancer.Outcome{Latency: 5 * time.Millisecond})
					i++
				}
			})
		}
	}
}

// BenchmarkPickBeginEndParallel: the same from all Ps at once on one shared balancer, with
// calls in flight, the contention of a busy replica.
func BenchmarkPickBeginEndParallel(b *testing.B) {
	for _, n := range []int{3, 10} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			bl := balancer.New(balancer.Config{})
			cs := benchCands(bl, n)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					c, _ := bl.Pick(cs, nil)
					bl.Begin(c).End(balancer.Outcome{Latency: 5 * time.Millisecond})
				}
			})
		})
	}
}

func benchCands(bl *balancer.Balancer, n int) []balancer.Candidate {
	cs := make([]balancer.Candidate, n)
	for i := range cs {
		cs[i] = balancer.Candidate{TenantID: "ten_1", AgentID: fmt.Sprintf("agt_01J%023d", i), Weight: float64(1 + i%3)}
		observe(bl, cs[i], 3, time.Duration(1+i)*time.Millisecond, false)
	}
	return cs
}

// BenchmarkBaselineUniform is the same-run baseline for the ratio: a uniform random choice
// among n candidates with two clock readings (what the cheapest balancer would cost).
func BenchmarkBaselineUniform(b *testing.B) {
	for _, n := range []int{3, 10} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			cs := make([]balancer.Candidate, n)
			var sink balancer.Candidate
			for b.Loop() {
				start := time.Now()
				sink = cs[rand.IntN(n)]
				_ = time.Since(start)
			}
			_ = sink
		})
	}
}
