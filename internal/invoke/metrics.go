package invoke

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/nops-kernel/nops/internal/balancer"
)

// durationBuckets are the boundaries of nops_invoke_duration_seconds; 0.5 s is the latency SLO
// threshold of deploy/prometheus.
var durationBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// instruments are the invocation SLIs (deploy/prometheus and deploy/grafana read them by name).
type instruments struct {
	duration    metric.Float64Histogram
	requests    metric.Int64Counter
	attempts    metric.Int64Counter
	inflight    metric.Int64UpDownCounter
	transitions metric.Int64Counter
	exhausted   metric.Int64Counter
	ejections   metric.Int64Counter

	// sets holds the attribute sets of the per-call series (finished, attempt, inFlight), built
	// once per combination: a set is sorted, hashed and allocated, four times per call
	// otherwise. It holds one entry per series the SDK already keeps, so it is bounded as the
	// series of registered agents are (tenants × capabilities × agents × the few outcomes and
	// kinds).
	sets sync.Map // callSeries → metric.MeasurementOption
}

// callSeries names one per-call series: kind is "finished", "attempt" or "in_flight", label the
// outcome (finished) or the attempt's kind (attempt), empty for in_flight.
type callSeries struct {
	kind, tenant, capability, agent, label string
}

// set returns the attribute set of k, building it on first use. A series without an agent (a
// call rejected before one was picked) is not kept: its capability is whatever the caller asked
// for, and the cache must stay bounded by the registry, not by the callers.
func (in *instruments) set(k callSeries) metric.MeasurementOption {
	if o, ok := in.sets.Load(k); ok {
		return o.(metric.MeasurementOption)
	}
	cache := k.agent != ""
	kvs := []attribute.KeyValue{attribute.String("tenant", k.tenant), attribute.String("capability", k.capability),
		attribute.String("agent", k.agent)}
	switch k.kind {
	case "finished":
		kvs = append(kvs, attribute.String("outcome", k.label))
	case "attempt":
		kvs = append(kvs, attribute.String("kind", k.label))
	}
	o := metric.WithAttributeSet(attribute.NewSet(kvs...))
	if cache {
		in.sets.Store(k, o)
	}
	return o
}

func newInstruments(m metric.Meter) (*instruments, error) {
	var in instruments
	var err error
	wrap := func(e error) error { return fmt.Errorf("invoke metrics: %w", e) }
	if in.duration, err = m.Float64Histogram("nops_invoke_duration_seconds", metric.WithUnit("s"),
		metric.WithDescription("Invocations from acceptance to the last byte relayed, by tenant, capability, agent and outcome."),
		metric.WithExplicitBucketBoundaries(durationBuckets...)); err != nil {
		return nil, wrap(err)
	}
	if in.requests, err = m.Int64Counter("nops_invoke_requests_total",
		metric.WithDescription("Finished invocations by tenant, capability, agent and outcome (ok, client_error, error, timeout, rejected).")); err != nil {
		return nil, wrap(err)
	}
	if in.attempts, err = m.Int64Counter("nops_invoke_attempts_total",
		metric.WithDescription("Requests sent to agents, by kind: first, retry, hedge.")); err != nil {
		return nil, wrap(err)
	}
	if in.inflight, err = m.Int64UpDownCounter("nops_invoke_in_flight",
		metric.WithDescription("Requests to agents in progress.")); err != nil {
		return nil, wrap(err)
	}
	if in.transitions, err = m.Int64Counter("nops_invoke_breaker_transitions_total",
		metric.WithDescription("Circuit breaker state changes per agent, by the state entered.")); err != nil {
		return nil, wrap(err)
	}
	if in.exhausted, err = m.Int64Counter("nops_invoke_retry_budget_exhausted_total",
		metric.WithDescription("Retries and hedges refused because the retry budget was spent.")); err != nil {
		return nil, wrap(err)
	}
	if in.ejections, err = m.Int64Counter("nops_routing_ejections_total",
		metric.WithDescription("Outlier ejections of agents after consecutive failures.")); err != nil {
		return nil, wrap(err)
	}
	return &in, nil
}

// observe registers the gauges read at collection time.
func (in *instruments) observe(m metric.Meter, gs *guards, bal *balancer.Balancer) error {
	state, err := m.Int64ObservableGauge("nops_invoke_breaker_state",
		metric.WithDescription("Circuit breaker state per agent: 0 closed, 1 half-open, 2 open."))
	if err != nil {
		return fmt.Errorf("invoke metrics: %w", err)
	}
	capacity, err := m.Int64ObservableGauge("nops_invoke_agent_capacity",
		metric.WithDescription("Concurrent requests the kernel sends one agent at most (its bulkhead)."))
	if err != nil {
		return fmt.Errorf("invoke metrics: %w", err)
	}
	score, err := m.Float64ObservableGauge("nops_routing_agent_score",
		metric.WithDescription("The balancer's health score of an agent, 0..1, from the kernel's observations."))
	if err != nil {
		return fmt.Errorf("invoke metrics: %w", err)
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		byTenant := map[string][]balancer.Candidate{}
		gs.each(func(g *guard) {
			attrs := metric.WithAttributes(attribute.String("tenant", g.tenant), attribute.String("agent", g.agent))
			var v int64
			switch breakerName(g.cb.State()) {
			case BreakerHalfOpen:
				v = 1
			case BreakerOpen:
				v = 2
			}
			o.ObserveInt64(state, v, attrs)
			o.ObserveInt64(capacity, int64(g.capacity), attrs)
			byTenant[g.tenant] = append(byTenant[g.tenant], balancer.Candidate{TenantID: g.tenant, AgentID: g.agent, Weight: 1})
		})
		// Scores are relative (latency against the best of the set): compare a tenant's agents.
		for tenant, cands := range byTenant {
			for i, f := range bal.Scores(cands) {
				o.ObserveFloat64(score, f.Score(), metric.WithAttributes(attribute.String("tenant", tenant), attribute.String("agent", cands[i].AgentID)))
			}
		}
		return nil
	}, state, capacity, score)
	if err != nil {
		return fmt.Errorf("invoke metrics: %w", err)
	}
	return nil
}

func (in *instruments) finished(tenant, capability, agent, outcome string, d time.Duration) {
	attrs := in.set(callSeries{"finished", tenant, capability, agent, outcome})
	in.requests.Add(context.Background(), 1, attrs)
	if d > 0 {
		in.duration.Record(context.Background(), d.Seconds(), attrs)
	}
}

func (in *instruments) attempt(tenant, capability, agent, kind string) {
	in.attempts.Add(context.Background(), 1, in.set(callSeries{"attempt", tenant, capability, agent, kind}))
}

func (in *instruments) inFlight(tenant, capability, agent string, delta int64) {
	in.inflight.Add(context.Background(), delta, in.set(callSeries{"in_flight", tenant, capability, agent, ""}))
}

// breakerSeen creates an agent's transition series at 0, so that Prometheus's increase() sees
// the first transition after a start (a series born with its first increment shows none).
func (in *instruments) breakerSeen(tenant, agent string) {
	for _, to := range []string{BreakerClosed, BreakerHalfOpen, BreakerOpen} {
		in.transitions.Add(context.Background(), 0, metric.WithAttributeSet(attribute.NewSet(
			attribute.String("tenant", tenant), attribute.String("agent", agent), attribute.String("to", to))))
	}
}

func (in *instruments) breakerChanged(tenant, agent, to string) {
	in.transitions.Add(context.Background(), 1, metric.WithAttributeSet(attribute.NewSet(
		attribute.String("tenant", tenant), attribute.String("agent", agent), attribute.String("to", to))))
}

func (in *instruments) budgetExhausted(tenant, capability string) {
	in.exhausted.Add(context.Background(), 1, metric.WithAttributeSet(attribute.NewSet(
		attribute.String("tenant", tenant), attribute.String("capability", capability))))
}

func (in *instruments) ejected(tenant, agent string) {
	in.ejections.Add(context.Background(), 1, metric.WithAttributeSet(attribute.NewSet(
		attribute.String("tenant", tenant), attribute.String("agent", agent))))
}
