package ratelimit_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/ratelimit"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

// BenchmarkCheck measures one full check (global, per-IP, tenant, principal and class rules) on
// the memory store and on Redis (one round trip), over 1024 client addresses, in parallel.
//
//	go test -run '^$' -bench BenchmarkCheck -benchmem ./internal/ratelimit/
func BenchmarkCheck(b *testing.B) {
	cfg := ratelimit.Config{
		Global:       ratelimit.Rule{Limit: ratelimit.MaxLimit, Period: time.Second},
		PerIP:        ratelimit.Rule{Limit: ratelimit.MaxLimit, Period: time.Second},
		PerTenant:    ratelimit.Rule{Limit: ratelimit.MaxLimit, Period: time.Second},
		PerPrincipal: ratelimit.Rule{Limit: ratelimit.MaxLimit, Period: time.Second},
		Classes:      map[string]ratelimit.Rule{"read": {Limit: ratelimit.MaxLimit, Period: time.Second}},
	}
	reqs := make([]ratelimit.Request, 1024)
	for i := range reqs {
		reqs[i] = ratelimit.Request{
			IP:     netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}),
			Tenant: "ten_01jz8y3w6v6r3b5q8x9k2m4n7q", Principal: "usr_bench", Route: "GET /v1/agents", RouteClass: "read",
		}
	}
	run := func(b *testing.B, opts ratelimit.Options) {
		l, err := ratelimit.New(cfg, opts)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = l.Close() })
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				l.Check(b.Context(), reqs[i%len(reqs)])
				i++
			}
		})
	}
	b.Run("memory", func(b *testing.B) { run(b, ratelimit.Options{}) })
	b.Run("redis", func(b *testing.B) {
		url, ns := services.RedisNamespace(b)
		cfg.RedisPrefix = ns + ":rl:"
		run(b, ratelimit.Options{Redis: openRedis(b, url)})
	})
}
