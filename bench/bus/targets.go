package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/nops-kernel/nops/bench/internal/benchkit"
	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/bus/natsbus"
	"github.com/nops-kernel/nops/internal/bus/redisbus"
)

// The adapter settings the benchmark knows.
const (
	adEmbeddedSync  = "embedded-sync"  // embedded JetStream, fsync before every acknowledgement
	adEmbeddedAsync = "embedded-async" // embedded JetStream, periodic fsync
	adNATS          = "nats"           // external NATS JetStream (-nats-url)
	adRedis         = "redis"          // Redis Streams (-redis-url)
)

var allAdapters = []string{adEmbeddedSync, adEmbeddedAsync, adNATS, adRedis}

// The implementations measured on an adapter.
const (
	implRaw    = "raw"    // the client library alone
	implAtomic = "atomic" // the client library with JetStream atomic batch publish
	implOurs   = "ours"   // bus.Publish + bus.Subscribe
)

var allImpls = []string{implRaw, implAtomic, implOurs}

// implLabel describes impl on adapter a in the report.
func implLabel(a, impl string) string {
	switch {
	case impl == implOurs:
		return "ours: bus.Publish + bus.Subscribe"
	case impl == implAtomic:
		return "raw: nats.go, atomic batch publish"
	case a == adRedis:
		return "raw: go-redis XADD + XREADGROUP/XACK"
	default:
		return "raw: nats.go PublishAsync + pull consumer"
	}
}

// implsOf returns the implementations measured on adapter a, in the order they run. Atomic
// batches need nats-server 2.12+: the embedded server has it; an external one may not.
func implsOf(o options, a string) []string {
	var out []string
	for _, impl := range o.Impls {
		if impl == implAtomic && a == adRedis {
			continue
		}
		if impl == implAtomic && a == adNATS && !o.atomicExternal {
			continue
		}
		out = append(out, impl)
	}
	return out
}

// phaseSystem is what one phase runs against: a fresh stream (or namespace) with a consumer
// already running.
type phaseSystem struct {
	pub   any // a publisher or an asyncPublisher
	close func() error
}

// env holds what the phases share: the options, the payload and the external clients.
type env struct {
	o       options
	payload []byte
	logger  *slog.Logger
	rdb     redis.UniversalClient // nil unless redis is measured
	nc      *nats.Conn            // connection to the external NATS; nil unless nats is measured
}

// open starts impl on adapter a for one phase, consuming into rec.
func (e *env) open(ctx context.Context, a, impl string, rec *recorder) (phaseSystem, error) {
	ns := benchkit.UniqueName("bench")
	// The raw stream gets the settings natsbus gives its event stream by default.
	raw := natsRawConfig{
		ns: ns, maxAge: natsbus.DefaultRetention, dedup: natsbus.DefaultDedupWindow, replicas: natsbus.DefaultReplicas,
		atomic: impl == implAtomic, maxPending: e.o.MaxPending, batchPrefix: ns + "-",
	}
	switch a {
	case adEmbeddedSync, adEmbeddedAsync:
		dir, err := os.MkdirTemp(e.o.DataDir, "nops-bench-bus-")
		if err != nil {
			return phaseSystem{}, fmt.Errorf("data directory: %w", err)
		}
		nb, err := natsbus.Open(ctx, embeddedConfig(dir, a == adEmbeddedSync), e.logger)
		if err != nil {
			return phaseSystem{}, errors.Join(fmt.Errorf("open embedded bus: %w", err), os.RemoveAll(dir))
		}
		closeBus := func() error { return errors.Join(nb.Close(), os.RemoveAll(dir)) }
		if impl == implOurs {
			s, err := startOurs(ctx, nb, e.o.ConsumerConcurrency, e.o.ConsumerConcurrency+bus.DefaultPrefetch, e.payload, rec)
			if err != nil {
				return phaseSystem{}, errors.Join(err, closeBus())
			}
			// ours.close closes the bus.
			return phaseSystem{pub: s, close: func() error { return errors.Join(s.close(), os.RemoveAll(dir)) }}, nil
		}
		r, err := openNATSRaw(ctx, nb.Conn(), raw, e.payload, rec)
		if err != nil {
			return phaseSystem{}, errors.Join(err, closeBus())
		}
		return natsRawSystem(r, impl, func() error { return errors.Join(r.close(), closeBus()) }), nil

	case adNATS:
		if impl == implOurs {
			nb, err := natsbus.Open(ctx, externalConfig(e.o.NATSURL, ns), e.logger)
			if err != nil {
				return phaseSystem{}, errors.Join(fmt.Errorf("open nats bus: %w", err), deleteNATSStreams(e.nc, ns))
			}
			s, err := startOurs(ctx, nb, e.o.ConsumerConcurrency, e.o.ConsumerConcurrency+bus.DefaultPrefetch, e.payload, rec)
			if err != nil {
				return phaseSystem{}, errors.Join(err, nb.Close(), deleteNATSStreams(e.nc, ns))
			}
			return phaseSystem{pub: s, close: func() error { return errors.Join(s.close(), deleteNATSStreams(e.nc, ns)) }}, nil
		}
		r, err := openNATSRaw(ctx, e.nc, raw, e.payload, rec)
		if err != nil {
			return phaseSystem{}, err
		}
		return natsRawSystem(r, impl, r.close), nil

	case adRedis:
		if impl == implOurs {
			return e.openRedisOurs(ctx, ns, rec)
		}
		r, err := openRedisRaw(ctx, e.rdb, ns, redisbus.DefaultRetention, e.payload, rec)
		if err != nil {
			return phaseSystem{}, errors.Join(err, benchkit.DeleteRedisKeys(ctx, e.rdb, ns))
		}
		return phaseSystem{pub: r, close: func() error { return errors.Join(r.close(), benchkit.DeleteRedisKeys(ctx, e.rdb, ns)) }}, nil
	}
	return phaseSystem{}, fmt.Errorf("unknown adapter %q", a)
}

func natsRawSystem(r *natsRaw, impl string, closeFn func() error) phaseSystem {
	if impl == implAtomic {
		return phaseSystem{pub: natsRawAtomic{r: r}, close: closeFn}
	}
	return phaseSystem{pub: r, close: closeFn}
}

// deleteNATSStreams deletes the streams on nc's server that hold subjects of namespace ns.
func deleteNATSStreams(nc *nats.Conn, ns string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("clean up streams of %s: %w", ns, err)
	}
	names := js.StreamNames(ctx, jetstream.WithStreamListSubject(ns+".>"))
	var errs []error
	for name := range names.Name() {
		if err := js.DeleteStream(ctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			errs = append(errs, fmt.Errorf("delete stream %s: %w", name, err))
		}
	}
	if err := names.Err(); err != nil {
		errs = append(errs, fmt.Errorf("list streams of %s: %w", ns, err))
	}
	return errors.Join(errs...)
}
