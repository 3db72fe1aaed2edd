package kernel

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"

	"github.com/nops-kernel/nops/internal/balancer"
	"github.com/nops-kernel/nops/internal/billing"
	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/control"
	"github.com/nops-kernel/nops/internal/egress"
	"github.com/nops-kernel/nops/internal/invoke"
)

// egressPolicy is the configured policy for calls to agents.
func egressPolicy(cfg config.Config) (egress.Policy, error) {
	allow, err := config.ParsePrefixList(cfg.Egress.Allow)
	if err != nil {
		return egress.Policy{}, fmt.Errorf("egress.allow: %w", err)
	}
	deny, err := config.ParsePrefixList(cfg.Egress.Deny)
	if err != nil {
		return egress.Policy{}, fmt.Errorf("egress.deny: %w", err)
	}
	return egress.Policy{AllowLoopback: cfg.LoopbackAllowed(), AllowPrivate: cfg.Egress.AllowPrivate, Allow: allow, Deny: deny}, nil
}

// buildInvoke assembles the invoke engine: the safe egress transport, routing tables, balancer,
// breakers and the usage events of completed calls.
func buildInvoke(cfg config.Config, ctl *control.Control, routes invoke.Routes, usage *billing.Recorder, mp metric.MeterProvider, prop propagation.TextMapPropagator, logger *slog.Logger) (*invoke.Service, error) {
	pol, err := egressPolicy(cfg)
	if err != nil {
		return nil, err
	}
	transport := egress.NewTransport(pol, egress.TransportOptions{
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
	})
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
		Transport:  transport,
		Logger:     logger,
		Meter:      mp.Meter("nops/invoke"),
		Propagator: prop,
		OnBlocked: func(ctx context.Context, tenant, agentID string, b *egress.BlockedError) {
			if err := ctl.Deny(ctx, tenant, control.ActionEgressRefused, "agents/"+agentID, b.Reason); err != nil {
				logger.ErrorContext(ctx, "audit a refused egress", "agent", agentID, "error", err)
			}
		},
		OnComplete: func(_ context.Context, c invoke.Completion) {
			usage.Record(billing.Usage{
				Tenant: c.Tenant, AgentID: c.AgentID, Source: billing.SourceInvocation, Capability: c.Capability,
				RequestID: c.RequestID, Status: c.Status, RequestBytes: c.RequestBytes, ResponseBytes: c.ResponseBytes,
				StartedAt: c.StartedAt, Duration: c.Duration, TraceParent: c.TraceParent,
			})
		},
	})
}
