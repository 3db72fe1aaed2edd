package kernel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/degrade"
	"github.com/nops-kernel/nops/internal/events"
	"github.com/nops-kernel/nops/internal/flags"
	"github.com/nops-kernel/nops/internal/health"
	"github.com/nops-kernel/nops/internal/middleware"
)

// WriteProbeLease is the lease row the read_only write probe writes (an upsert per round and
// replica; the row is shared, its holder is whichever replica probed last).
const WriteProbeLease = "degrade-write-probe"

// buildDegrade wires the degraded-mode monitor (internal/degrade) to its signals: a write to the
// database, the "bus" readiness check, the perimeter's in-flight gate; to the kernel.degrade.*
// flags for manual modes; and to the audited, outboxed record of each change, with the bus as
// the fallback while the database refuses writes.
func (k *Kernel) buildDegrade(checker *health.Checker, gate *middleware.Gate) (*degrade.Monitor, error) {
	cfg := k.cfg
	holder := k.relay.Holder()
	// The last readiness report a round read, for nops_dependency_up (alerts NopsDatabaseDown,
	// NopsBusDown, NopsRedisDown): the rounds refresh it every health.degrade_interval.
	var lastReport atomic.Pointer[health.Report]
	if _, err := k.tel.MeterProvider().Meter("nops/degrade").Int64ObservableGauge("nops_dependency_up",
		metric.WithDescription("1 while the dependency's readiness check (database, bus, redis) is up on this replica, else 0."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			rep := lastReport.Load()
			if rep == nil {
				return nil
			}
			for _, c := range rep.Checks {
				v := int64(0)
				if c.Up {
					v = 1
				}
				o.Observe(v, metric.WithAttributes(attribute.String("check", c.Name)))
			}
			return nil
		})); err != nil {
		return nil, fmt.Errorf("dependency gauge: %w", err)
	}
	timeout := cfg.Health.CheckTimeout.D()
	signals := map[degrade.Mode]func(context.Context) degrade.Signal{
		degrade.ReadOnly: func(ctx context.Context) degrade.Signal {
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			// A real write through the pool every request uses: it fails when the database is
			// unreachable and when it refuses writes (a read-only primary, a standby after a
			// failover, a full disk) while reads may still work.
			if _, err := k.st.AcquireLease(ctx, WriteProbeLease, holder, time.Millisecond, time.Now()); err != nil {
				return degrade.Signal{Bad: true, Reason: "database write probe failing: " + probeReason(ctx, err)}
			}
			return degrade.Signal{}
		},
		degrade.BusDown: func(ctx context.Context) degrade.Signal {
			rep := checker.Check(ctx)
			lastReport.Store(&rep)
			for _, c := range rep.Checks {
				if c.Name == "bus" && !c.Up {
					return degrade.Signal{Bad: true, Reason: "bus readiness check down: " + c.Error}
				}
			}
			return degrade.Signal{}
		},
	}
	if gate != nil && gate.Config().Max > 0 {
		var lastShed uint64
		signals[degrade.ShedBestEffort] = func(context.Context) degrade.Signal {
			shed := gate.Shed()
			grew := shed > lastShed
			lastShed = shed // only the monitor's rounds (one at a time) read and write it
			switch {
			case gate.Saturated():
				return degrade.Signal{Bad: true, Reason: fmt.Sprintf("in-flight requests at the best-effort threshold (%d)", gate.Config().BestEffortMax)}
			case grew:
				return degrade.Signal{Bad: true, Reason: "requests shed by the in-flight gate since the last round"}
			}
			return degrade.Signal{}
		}
	}
	return degrade.New(degrade.Options{
		Kernel:  holder,
		Signals: signals,
		Manual: func(ctx context.Context, m degrade.Mode) bool {
			res, ok := k.flags.eval.Evaluate(ctx, degrade.FlagKey(m), flags.Subject{})
			return ok && res.Bool()
		},
		Record:        k.dom.control.RecordDegradation,
		Publish:       k.publishDegradation,
		Interval:      cfg.Health.DegradeInterval.D(),
		RecoverRounds: cfg.Health.DegradeRecover,
		RetryAfter:    cfg.Health.DegradeRetryAfter.D(),
		Logger:        k.logger,
		Tracer:        k.tel.TracerProvider().Tracer("nops/degrade"),
		Meter:         k.tel.MeterProvider().Meter("nops/degrade"),
	})
}

// publishDegradation sends a change's event straight to the bus, for when the database refuses
// the outbox write (read_only mode).
func (k *Kernel) publishDegradation(ctx context.Context, p events.DegradationChanged) error {
	ev, err := events.New(p.EventType(), p.EventTenant(), p.EventSubject(), p, p.ChangedAt, bus.InjectTraceParent(ctx))
	if err != nil {
		return err
	}
	rec, err := ev.Outbox()
	if err != nil {
		return err
	}
	return k.bus.Publish(ctx, bus.Message{ID: rec.ID, Tenant: rec.Tenant, Type: string(rec.Type), TraceParent: ev.TraceParent, Payload: rec.Payload})
}

// probeReason classifies a probe error the way the readiness checks do: clients see "timeout"
// or "unavailable", never the error's text.
func probeReason(ctx context.Context, err error) string {
	var ne net.Error
	if errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return health.ReasonTimeout
	}
	return health.ReasonUnavailable
}
