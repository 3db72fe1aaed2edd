package kernel

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/bus/natsbus"
	"github.com/nops-kernel/nops/internal/bus/redisbus"
	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/consumers"
	"github.com/nops-kernel/nops/internal/control"
)

// JetStreamDir is the embedded JetStream's store under the data directory.
const JetStreamDir = "jetstream"

// openBus opens the event bus cfg selects: Redis Streams on rc when bus.kind is redis, otherwise
// NATS JetStream, external when bus.nats_url is set and embedded under data_dir when not.
func openBus(ctx context.Context, cfg config.Config, rc *redis.Client, ins *bus.Instruments, logger *slog.Logger) (bus.Bus, error) {
	c := cfg.Bus
	if c.Kind == "redis" {
		b, err := redisbus.Open(ctx, redisbus.Config{
			Client:         rc,
			Namespace:      c.Namespace,
			Retention:      c.Retention.D(),
			MaxLen:         c.RedisMaxLen,
			MinReplicas:    c.RedisMinReplicas,
			DedupWindow:    c.DedupWindow.D(),
			PublishTimeout: c.PublishTimeout.D(),
			MaxPending:     c.MaxPending,
			Instruments:    ins,
			Logger:         logger,
		})
		if err != nil {
			return nil, fmt.Errorf("redis streams: %w", err)
		}
		return b, nil
	}
	durability := natsbus.DurabilitySync
	if c.Durability == "async" {
		durability = natsbus.DurabilityAsync
	}
	b, err := natsbus.Open(ctx, natsbus.Config{
		URL:            c.NATSURL,
		StoreDir:       filepath.Join(cfg.DataDir, JetStreamDir),
		Listen:         c.EmbeddedListen,
		Name:           "nops-kernel",
		ConnectTimeout: cfg.Database.ConnectTimeout.D(),
		Namespace:      c.Namespace,
		Durability:     durability,
		SyncInterval:   c.SyncInterval.D(),
		Replicas:       c.Replicas,
		Retention:      c.Retention.D(),
		DedupWindow:    c.DedupWindow.D(),
		PublishTimeout: c.PublishTimeout.D(),
		MaxPending:     c.MaxPending,
		AtomicBatchMin: c.NATSAtomicBatchMin,
		CredsFile:      c.NATSCredsFile,
		TLSCAFile:      c.NATSTLSCA,
		TLSCertFile:    c.NATSTLSCert,
		TLSKeyFile:     c.NATSTLSKey,
		Instruments:    ins,
	}, logger)
	if err != nil {
		return nil, err
	}
	return b, nil
}

// consumerOptions maps the bus settings onto the kernel's consumers; dead letters are audited.
func consumerOptions(cfg config.Config, ctl *control.Control, logger *slog.Logger) consumers.Options {
	return consumers.Options{
		MaxDeliveries: cfg.Bus.MaxDeliveries,
		Backoff:       bus.Backoff{Initial: cfg.Bus.BackoffInitial.D(), Max: cfg.Bus.BackoffMax.D()},
		AckWait:       cfg.Bus.AckWait.D(),
		OnDeadLetter: func(ctx context.Context, dl bus.DeadLetter) {
			err := ctl.RecordAction(ctx, control.Action{
				Tenant:   dl.Message.Tenant,
				Action:   control.ActionEventDeadLettered,
				Resource: "events/" + dl.Consumer,
				Reason: "event " + dl.Message.ID + " (" + dl.Message.Type + ") dead-lettered as " + dl.ID +
					" after " + strconv.Itoa(dl.Attempts) + " attempts",
			})
			if err != nil {
				logger.ErrorContext(ctx, "audit dead letter", "dead_letter", dl.ID, "error", err)
			}
		},
	}
}

// runConsumers subscribes the kernel's consumers and keeps them subscribed until ctx ends, then
// stops them, waiting up to timeout for the handlers that run. A subscription that cannot be made
// (the bus is down at start) is retried with backoff; once made, the adapter rides out outages.
func runConsumers(ctx context.Context, b bus.Bus, specs []consumers.Spec, timeout time.Duration, logger *slog.Logger) error {
	var (
		mu   sync.Mutex
		subs []bus.Subscription
		wg   sync.WaitGroup
	)
	for _, s := range specs {
		wg.Go(func() {
			wait := 200 * time.Millisecond
			for {
				sub, err := s.Subscribe(ctx, b)
				if err == nil {
					mu.Lock()
					subs = append(subs, sub)
					mu.Unlock()
					return
				}
				if ctx.Err() != nil {
					return
				}
				logger.WarnContext(ctx, "subscribe consumer; retrying", "consumer", s.Config.Name, "error", err, "retry_in", wait.String())
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
				wait = min(2*wait, 10*time.Second)
			}
		})
	}
	wg.Wait()
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	mu.Lock()
	defer mu.Unlock()
	for _, sub := range subs {
		if err := sub.Stop(sctx); err != nil {
			logger.Warn("stop consumer", "error", err)
		}
	}
	return nil
}

// consumerNames lists the names of specs.
func consumerNames(specs []consumers.Spec) []string {
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.Config.Name
	}
	return names
}
