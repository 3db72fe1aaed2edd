package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/nops-kernel/nops/bench/internal/benchkit"
	"github.com/nops-kernel/nops/internal/bus/natsbus"
	"github.com/nops-kernel/nops/internal/bus/redisbus"
)

// embeddedConfig is the embedded bus of one phase: its own store directory, the durability
// under test, every other setting the adapter's default (as the kernel runs it).
func embeddedConfig(dir string, sync bool) natsbus.Config {
	d := natsbus.DurabilityAsync
	if sync {
		d = natsbus.DurabilitySync
	}
	return natsbus.Config{StoreDir: dir, Durability: d, Name: "nops-bench"}
}

// externalConfig is the bus on the external NATS of one phase, in a namespace of its own.
func externalConfig(url, ns string) natsbus.Config {
	return natsbus.Config{URL: url, Namespace: ns, Name: "nops-bench"}
}

// redisKeyPrefix is the prefix of every key redisbus writes in namespace ns (a Redis Cluster hash
// tag: see the redisbus package documentation).
func redisKeyPrefix(ns string) string { return "{" + ns + "}" }

// openRedisOurs opens redisbus in namespace ns on the benchmark's client and subscribes the
// consumer. Closing deletes the namespace's keys; the client stays open.
func (e *env) openRedisOurs(ctx context.Context, ns string, rec *recorder) (phaseSystem, error) {
	cleanup := func() error { return benchkit.DeleteRedisKeys(ctx, e.rdb, redisKeyPrefix(ns)) }
	rb, err := redisbus.Open(ctx, redisbus.Config{Client: e.rdb, Namespace: ns, Logger: e.logger})
	if err != nil {
		return phaseSystem{}, errors.Join(fmt.Errorf("open redis bus: %w", err), cleanup())
	}
	s, err := startOurs(ctx, rb, e.o.ConsumerConcurrency, redisReadCount, e.payload, rec)
	if err != nil {
		return phaseSystem{}, errors.Join(err, rb.Close(), cleanup())
	}
	return phaseSystem{pub: s, close: func() error { return errors.Join(s.close(), cleanup()) }}, nil
}
