package kernel

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"

	"github.com/nops-kernel/nops/internal/balancer"
	"github.com/nops-kernel/nops/internal/billing"
	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/chaos"
	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/consumers"
	"github.com/nops-kernel/nops/internal/control"
	"github.com/nops-kernel/nops/internal/egress"
	"github.com/nops-kernel/nops/internal/events"
	"github.com/nops-kernel/nops/internal/identity"
	"github.com/nops-kernel/nops/internal/invoke"
)

// buildInvoke assembles the invoke engine: the safe egress transport (mTLS with the kernel's
// SVID wid to https agents), routing tables, balancer, breakers and the invocation.completed and
// billing.usage events of completed calls.
func buildInvoke(cfg config.Config, ch *chaos.Chaos, ctl *control.Control, gate *egress.Gate, eaudit *egressAudit, admit func(context.Context, string) error, routes invoke.Routes, usage *billing.Recorder, wid identity.Source, mp metric.MeterProvider, prop propagation.TextMapPropagator, logger *slog.Logger) (*invoke.Service, error) {
	// The replica named in breaker events: breakers are per replica.
	node, _ := os.Hostname()
	if !events.ValidKernelName(node) {
		node = ""
	}
	transport, err := egress.NewAgentTransport(gate.AgentsPolicy(), wid, egress.AgentTransportOptions{
		Gate: gate,
		TransportOptions: egress.TransportOptions{
			MaxIdleConnsPerHost: 256,
			IdleConnTimeout:     90 * time.Second,
		},
		Meter: mp.Meter("nops/egress"),
	})
	if err != nil {
		return nil, err
	}
	var agents http.RoundTripper = transport
	if cfg.Chaos.Enabled {
		agents = ch.Transport(transport) // faults before the request leaves (docs/chaos.md)
	}
	in := cfg.Invoke
	return invoke.New(invoke.Config{
		Timeout:        in.Timeout.D(),
		MaxTimeout:     in.MaxTimeout.D(),
		AttemptTimeout: in.AttemptTimeout.D(),
		MaxAttempts:    in.MaxAttempts,
		BackoffBase:    in.BackoffBase.D(),
		BackoffMax:     in.BackoffMax.D(),
		RetryBudget:    invoke.RetryBudget{Ratio: in.RetryBudget, MinPerSecond: in.RetryBudgetFloor},
		Breaker: invoke.BreakerConfig{
			Failures: uint(in.BreakerFailures), Delay: in.BreakerDelay.D(), Successes: uint(in.BreakerSuccesses),
		},
		AgentInFlight: in.AgentInFlight,
		CandidatesTTL: in.CandidatesTTL.D(),
		Balancer: balancer.Config{
			Static:     in.Balancing == "static",
			EjectAfter: in.EjectAfter,
			EjectBase:  in.EjectFor.D(),
		},
	}, invoke.Deps{
		Agents:     ctl.Agents,
		Routes:     routes,
		Transport:  agents,
		Logger:     logger,
		Meter:      mp.Meter("nops/invoke"),
		Propagator: prop,
		AdmitAgent: admit,
		OnBlocked: func(ctx context.Context, tenant, agentID string, b *egress.BlockedError) {
			if err := ctl.Deny(ctx, tenant, control.ActionEgressRefused, "agents/"+agentID, b.Error()); err != nil {
				logger.ErrorContext(ctx, "audit a refused egress", "agent", agentID, "error", err)
			}
			eaudit.OnAgentRefused(tenant, agentID, b)
		},
		// A synchronous call's invocation.completed and billing.usage go through the batching
		// recorder, off the request path; an async call's are written by invoke.Async in the
		// transaction that stores its result.
		OnBreaker: func(tenant, agentID, from, to string) {
			e, err := events.New(events.TypeAgentBreakerChanged, tenant, events.AgentSubject(agentID),
				events.AgentBreakerChanged{AgentID: agentID, Tenant: tenant, From: from, To: to, Kernel: node, ChangedAt: time.Now().UTC()}, time.Now(), "")
			if err != nil {
				logger.Error("breaker event", "agent", agentID, "error", err)
				return
			}
			usage.RecordEvents(e)
		},
		OnComplete: func(ctx context.Context, c invoke.Completion) {
			if c.Async {
				return
			}
			recs, err := invoke.CompletionRecords(c)
			if err != nil {
				logger.ErrorContext(ctx, "events of a completed invocation", "invocation", c.InvocationID, "error", err)
				return
			}
			usage.RecordOutbox(recs...)
		},
	})
}

// buildAsync assembles the async invocations over the invoke engine and the store.
func buildAsync(cfg config.Config, svc *invoke.Service, st invoke.AsyncStore, enqueued func(), logger *slog.Logger) (*invoke.Async, error) {
	return invoke.NewAsync(svc, st, invoke.AsyncOptions{
		ResultTTL:       cfg.Invoke.ResultTTL.D(),
		MaxRequestBytes: cfg.HTTP.MaxBodyBytes,
		DrainTimeout:    cfg.HTTP.ShutdownTimeout.D(),
		Logger:          logger,
		Enqueued:        enqueued,
	})
}

// asyncConsumer is the "invocations" consumer: nops.invocation.requested.v1 of every tenant. Its
// handler only claims and starts a call, so several run at once to keep claims flowing.
func asyncConsumer(o consumers.Options, a *invoke.Async) consumers.Spec {
	return consumers.Spec{
		Config: bus.ConsumerConfig{
			Name:          invoke.AsyncConsumer,
			Filter:        bus.Filter{Types: []string{string(events.TypeInvocationRequested)}},
			MaxDeliveries: o.MaxDeliveries,
			Backoff:       o.Backoff,
			AckWait:       o.AckWait,
			Concurrency:   max(o.Concurrency, 16),
			OnDeadLetter:  o.OnDeadLetter,
		}.WithDefaults(),
		Handler: a.Handler(),
	}
}

// invoker is what the HTTP API invokes through: the synchronous engine and the async one.
type invoker struct {
	*invoke.Service
	*invoke.Async
}
