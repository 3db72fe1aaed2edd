package main

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// cpuCost is the CPU time one phase took, from opening its system to closing it (warm-up and
// drain included): this process — the load generator, the client library or our layer, and the
// embedded broker when there is one — and, on the redis adapter, the Redis server (INFO cpu; it
// also counts whatever else that Redis serves meanwhile). On a shared machine the events/s of a
// phase follow the CPU the other tenants leave it; the CPU spent per event does much less, so it
// shows where our layer's cost goes even when the throughput ratio drifts between runs.
type cpuCost struct {
	process time.Duration
	redis   time.Duration
	events  int64 // events consumed, warm-up included
	ok      bool  // process CPU time is known on this system
}

// perEvent is d per event in microseconds.
func (c cpuCost) perEvent(d time.Duration) float64 {
	if c.events == 0 {
		return 0
	}
	return float64(d.Nanoseconds()) / 1e3 / float64(c.events)
}

// cpuMeter reads the CPU counters at the start of a phase.
type cpuMeter struct {
	rdb            redis.UniversalClient // nil: no Redis to account
	process, redis time.Duration
	ok             bool
}

func startCPU(ctx context.Context, rdb redis.UniversalClient) cpuMeter {
	m := cpuMeter{rdb: rdb}
	m.process, m.ok = processCPU()
	if rdb != nil {
		m.redis = redisCPU(ctx, rdb)
	}
	return m
}

// stop returns the CPU time since start, for events consumed.
func (m cpuMeter) stop(ctx context.Context, events int64) cpuCost {
	c := cpuCost{events: events, ok: m.ok}
	if p, ok := processCPU(); ok && m.ok {
		c.process = p - m.process
	}
	if m.rdb != nil {
		c.redis = max(redisCPU(ctx, m.rdb)-m.redis, 0)
	}
	return c
}

// redisCPU is the Redis server's CPU time so far (used_cpu_user + used_cpu_sys); 0 when INFO
// is refused.
func redisCPU(ctx context.Context, rdb redis.UniversalClient) time.Duration {
	info, err := rdb.Info(ctx, "cpu").Result()
	if err != nil {
		return 0
	}
	var total time.Duration
	for line := range strings.SplitSeq(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || (k != "used_cpu_user" && k != "used_cpu_sys") {
			continue
		}
		if s, err := strconv.ParseFloat(v, 64); err == nil {
			total += time.Duration(s * float64(time.Second))
		}
	}
	return total
}
