package kernel

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/open-feature/go-sdk/openfeature"
	"github.com/open-feature/go-sdk/openfeature/isolated"
	"go.opentelemetry.io/otel/metric"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/consumers"
	"github.com/nops-kernel/nops/internal/control"
	"github.com/nops-kernel/nops/internal/events"
	"github.com/nops-kernel/nops/internal/flags"
)

// featureFlags are the kernel's feature flags on this replica: the evaluator (all flags in
// memory), its OpenFeature API and client, and the bus consumer that tells it about changes
// made on other replicas.
type featureFlags struct {
	eval   *flags.Evaluator
	api    *openfeature.EvaluationAPI
	client *openfeature.Client
}

// buildFlags gives ctl its flags service, loads every flag, and puts the evaluator behind an
// OpenFeature provider on an isolated API (no process-wide singleton: two kernels in one test
// process do not share providers).
func buildFlags(ctx context.Context, cfg config.Config, st Store, ctl *control.Control, meter metric.Meter, logger *slog.Logger) (*featureFlags, error) {
	svc, err := flags.NewService(st, flags.ServiceOptions{Logger: logger})
	if err != nil {
		return nil, err
	}
	eval, err := flags.NewEvaluator(st, flags.EvaluatorOptions{RefreshInterval: cfg.Flags.RefreshInterval.D(), Meter: meter, Logger: logger})
	if err != nil {
		return nil, err
	}
	if err := eval.Reload(ctx); err != nil {
		return nil, err
	}
	ctl.Flags = svc
	// This replica's own writes are evaluated as soon as the write returns: a reload before it
	// does (the commit is done; a failed reload leaves it to the next one).
	ctl.FlagsChanged = func(ctx context.Context) {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := eval.Reload(rctx); err != nil {
			logger.WarnContext(ctx, "reload feature flags after a change; retrying in the background", "error", err)
			eval.Notify()
		}
	}
	f := &featureFlags{eval: eval, api: isolated.NewAPI()}
	resolve := func(ctx context.Context, id string) (flags.Tenant, error) {
		t, err := ctl.Tenants.Get(ctx, id)
		if err != nil {
			return flags.Tenant{}, err
		}
		return flags.Tenant{ID: t.ID, Name: t.Name, Status: string(t.Status)}, nil
	}
	if err := f.api.SetProviderAndWait(ctx, flags.NewProvider(eval, resolve)); err != nil {
		return nil, fmt.Errorf("openfeature provider: %w", err)
	}
	f.client = f.api.NewClient()
	return f, nil
}

// consumer is this replica's consumer of flag change events, named after replica.
func (f *featureFlags) consumer(replica string) consumers.Spec {
	// Every replica needs every change event, so each has a consumer group of its own (a shared
	// one would hand each event to one replica only). New ones start at the end of the stream:
	// Reload above read the current flags.
	return consumers.Spec{
		Config: bus.ConsumerConfig{
			Name:        "flags-" + replica,
			Filter:      bus.Filter{Tenants: []string{events.KernelTenant}, Types: []string{string(events.TypeFlagChanged)}},
			DeliverNew:  true,
			Concurrency: 1,
			Prefetch:    bus.NoPrefetch,
		}.WithDefaults(),
		Handler: func(context.Context, bus.Delivery) error {
			f.eval.Notify()
			return nil
		},
	}
}

// close shuts the OpenFeature API down.
func (f *featureFlags) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return f.api.Shutdown(ctx)
}

// replicaName names this replica stably across restarts at the same host and address, so its
// flags consumer is reused rather than a new one left behind at every restart: a hash of the
// host name and the API's listen address, short enough for a consumer name.
func replicaName(addr string) string {
	host, _ := os.Hostname()
	sum := sha256.Sum256([]byte(host + "\x00" + addr))
	return hex.EncodeToString(sum[:8])
}
