package kernel

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/nops-kernel/nops/internal/apikey"
	"github.com/nops-kernel/nops/internal/audit"
	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/control"
	"github.com/nops-kernel/nops/internal/egress"
	"github.com/nops-kernel/nops/internal/registry"
	"github.com/nops-kernel/nops/internal/routing"
	"github.com/nops-kernel/nops/internal/tenant"
)

// domains are the tenant-facing services and the background work they need.
type domains struct {
	control     *control.Control
	keys        *apikey.Service
	usage       *apikey.UsageRecorder
	redigest    *apikey.Redigester // API keys verified under an older pepper, moved to the current one
	secrets     *secretFiles       // the pepper and the key-encryption key, reloaded without a restart (secrets.go)
	signer      *audit.Signer
	verifierKey string
	checkpoints *audit.Checkpointer
	// routes serves the routing tables to the invoke path; control invalidates it after its own
	// writes, and other replicas' writes show within its TTL.
	routes *routing.Cache
}

// buildDomains assembles the tenant, registry, API key, audit and routing services over st;
// enqueued is called after each commit that added events to the outbox. secrets are the key files,
// opened before the token service (whose keys the key-encryption key seals).
func buildDomains(cfg config.Config, st Store, secrets *secretFiles, gate *egress.Gate, enqueued func(), meter metric.Meter, logger *slog.Logger) (*domains, error) {
	d := &domains{}
	statusChanges, err := meter.Int64Counter("nops_agent_status_changes_total",
		metric.WithDescription("Agent status changes (healthy, stale, zombie) per agent, by the status entered."))
	if err != nil {
		return nil, fmt.Errorf("registry metrics: %w", err)
	}
	d.secrets = secrets
	d.usage = apikey.NewUsageRecorder(st, apikey.UsageOptions{Interval: cfg.APIKeys.UsageFlush.D(), Logger: logger})
	d.redigest = apikey.NewRedigester(st, apikey.RedigestOptions{Logger: logger})
	d.keys, err = apikey.NewService(st, d.secrets.ring.Peppers, time.Now, logger, apikey.Options{Usage: d.usage, Redigest: d.redigest})
	if err != nil {
		return nil, fmt.Errorf("api key service: %w", err)
	}
	if err := d.secrets.attach(d.keys); err != nil {
		return nil, fmt.Errorf("api key peppers: %w", err)
	}
	tenants, err := tenant.NewService(st, tenant.Config{})
	if err != nil {
		return nil, fmt.Errorf("tenant service: %w", err)
	}
	agents, err := registry.NewService(st, registry.Config{TTL: registry.TTLs{Stale: cfg.Registry.StaleAfter.D(), Zombie: cfg.Registry.ZombieAfter.D()}, Egress: gate})
	if err != nil {
		return nil, fmt.Errorf("registry service: %w", err)
	}
	d.signer, d.verifierKey, err = audit.LoadOrCreateSigner(cfg.AuditKeyPath(), cfg.Audit.KeyName)
	if err != nil {
		return nil, fmt.Errorf("audit signing key: %w", err)
	}
	d.checkpoints, err = audit.NewCheckpointer(audit.Policy{EveryRecords: cfg.Audit.CheckpointEvery, Interval: cfg.Audit.CheckpointInterval.D()}, time.Now)
	if err != nil {
		return nil, fmt.Errorf("audit checkpoints: %w", err)
	}
	d.control = control.New(st, tenants, agents, d.keys, control.Options{Logger: logger, Appended: d.checkpoints.Appended, Enqueued: enqueued, HeartbeatBatch: cfg.Registry.HeartbeatBatch,
		OnStatusChange: func(tenantID, agentID string, to registry.Status) {
			statusChanges.Add(context.Background(), 1, metric.WithAttributes(
				attribute.String("tenant", tenantID), attribute.String("agent", agentID), attribute.String("to", string(to))))
		}})
	d.routes = routing.NewCache(st, routing.DefaultCacheTTL, routing.CacheOptions{Logger: logger})
	if d.control.Routes, err = routing.NewService(st, routing.ServiceOptions{Cache: d.routes, Logger: logger}); err != nil {
		return nil, fmt.Errorf("routing service: %w", err)
	}
	return d, nil
}

// heartbeatWriters is how many group-commit transactions of heartbeats run at once: one on
// SQLite, which has one writer anyway; a few on PostgreSQL, which commits them in parallel.
func heartbeatWriters(cfg config.Config) int {
	if cfg.Database.URL == "" {
		return 1
	}
	return 4
}

// sweepLoop applies heartbeat-age status changes every interval until ctx ends.
func (k *Kernel) sweepLoop(ctx context.Context) error {
	t := time.NewTicker(k.cfg.Registry.SweepInterval.D())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		for {
			changes, err := k.dom.control.Sweep(ctx, 500)
			if err != nil {
				if ctx.Err() == nil {
					k.logger.WarnContext(ctx, "registry sweep failed", "error", err)
				}
				break
			}
			if len(changes) < 500 {
				break
			}
		}
	}
}

// checkpointLoop signs audit checkpoints when the policy says a tree is due. The first round
// signs every tree that has records since the last checkpoint (another replica's or before a
// restart), so nothing stays unsigned for long after a start.
func (k *Kernel) checkpointLoop(ctx context.Context) error {
	if trees, err := k.st.Trees(ctx); err == nil {
		for _, tree := range trees {
			if size, err := k.st.TreeSize(ctx, tree); err == nil {
				k.dom.checkpoints.Appended(tree, size)
			}
		}
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		for _, tree := range k.dom.checkpoints.Due() {
			cp, err := audit.SignCheckpoint(ctx, k.st, k.dom.signer, tree)
			if err != nil {
				if ctx.Err() == nil {
					k.logger.ErrorContext(ctx, "sign audit checkpoint", "tree", tree, "error", err)
				}
				continue
			}
			k.dom.checkpoints.Signed(tree, cp.Size)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
