// Package chaos injects faults — latency and errors — into the kernel's calls to its dependencies
// (the database, the bus, Redis and the agents) by percentage, for game days and tests
// (MISSION S7, docs/chaos.md). A Chaos holds the rules of one replica; it is concurrency-safe and
// injects nothing until rules are set. Only an enabled Chaos (chaos.enabled) accepts rules: a
// kernel whose configuration leaves it off can never inject anything.
package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// Target is a dependency faults can be injected into.
type Target string

// The targets.
const (
	Database Target = "database"
	Bus      Target = "bus"
	Redis    Target = "redis"
	Agent    Target = "agent"
)

// Targets lists every target, in a stable order.
var Targets = []Target{Database, Bus, Redis, Agent}

// MaxLatency bounds a rule's injected latency.
const MaxLatency = time.Minute

// ErrInjected is wrapped by every injected error.
var ErrInjected = errors.New("chaos: injected fault")

// ErrDisabled is returned by Set on a Chaos that the configuration leaves off.
var ErrDisabled = errors.New("chaos toggles are disabled in the configuration (chaos.enabled)")

// Rule is the faults of one target: with probability LatencyPercent/100 a call waits Latency
// first, and with probability ErrorPercent/100 it fails with an error wrapping ErrInjected.
type Rule struct {
	Target         Target
	Latency        time.Duration
	LatencyPercent float64
	ErrorPercent   float64
}

// FieldError names the field of a rule that is invalid: Field is "rules.<i>.<name>", as the API contract names array items.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// Validate checks rules: known targets, each at most once, percentages 0..100, latencies
// 0..MaxLatency. The error is a *FieldError.
func Validate(rules []Rule) error {
	seen := map[Target]bool{}
	for i, r := range rules {
		f := func(name, reason string) error {
			return &FieldError{Field: fmt.Sprintf("rules.%d.%s", i, name), Reason: reason}
		}
		switch r.Target {
		case Database, Bus, Redis, Agent:
		default:
			return f("target", "must be database, bus, redis or agent")
		}
		if seen[r.Target] {
			return f("target", "a target appears once at most")
		}
		seen[r.Target] = true
		if !(r.ErrorPercent >= 0 && r.ErrorPercent <= 100) {
			return f("error_percent", "must be 0 to 100")
		}
		if !(r.LatencyPercent >= 0 && r.LatencyPercent <= 100) {
			return f("latency_percent", "must be 0 to 100")
		}
		if r.Latency < 0 || r.Latency > MaxLatency {
			return f("latency", "must be 0 to "+MaxLatency.String())
		}
	}
	return nil
}

// Chaos is one replica's fault rules. The zero value is not usable: use New.
type Chaos struct {
	enabled bool
	rules   atomic.Pointer[map[Target]Rule]
	list    atomic.Pointer[[]Rule]
	count   metric.Int64Counter
	// draw returns a number in [0, 100); tests may replace it before use.
	draw func() float64
}

// New returns a Chaos without rules; enabled is chaos.enabled. m may be nil (no metrics).
func New(enabled bool, m metric.Meter) (*Chaos, error) {
	if m == nil {
		m = noop.NewMeterProvider().Meter("chaos")
	}
	count, err := m.Int64Counter("nops_chaos_injections_total",
		metric.WithDescription("Faults injected by the chaos toggles, by target (database, bus, redis, agent) and kind (latency, error)."))
	if err != nil {
		return nil, fmt.Errorf("chaos metrics: %w", err)
	}
	c := &Chaos{enabled: enabled, count: count, draw: func() float64 { return rand.Float64() * 100 }}
	empty := map[Target]Rule{}
	c.rules.Store(&empty)
	c.list.Store(&[]Rule{})
	return c, nil
}

// Enabled tells whether the configuration allows rules (chaos.enabled).
func (c *Chaos) Enabled() bool { return c != nil && c.enabled }

// Rules returns the rules in force, in the order they were set.
func (c *Chaos) Rules() []Rule {
	if c == nil {
		return nil
	}
	return append([]Rule(nil), *c.list.Load()...)
}

// Set replaces the rules; an empty list stops every injection. It fails with ErrDisabled when the
// configuration leaves chaos off, and with a *FieldError on an invalid rule.
func (c *Chaos) Set(rules []Rule) error {
	if !c.Enabled() {
		return ErrDisabled
	}
	if err := Validate(rules); err != nil {
		return err
	}
	m := make(map[Target]Rule, len(rules))
	for _, r := range rules {
		m[r.Target] = r
	}
	list := append([]Rule(nil), rules...)
	c.rules.Store(&m)
	c.list.Store(&list)
	return nil
}

// Inject applies target's rule to one call: it may wait the rule's latency (returning ctx's error
// if ctx ends first) and may return an error wrapping ErrInjected. A nil Chaos, or one without a
// rule for target, returns nil at once.
func (c *Chaos) Inject(ctx context.Context, target Target) error {
	if c == nil || exempt(ctx) {
		return nil
	}
	r, ok := (*c.rules.Load())[target]
	if !ok {
		return nil
	}
	if r.Latency > 0 && hit(c.draw(), r.LatencyPercent) {
		c.count.Add(ctx, 1, metric.WithAttributes(attribute.String("target", string(target)), attribute.String("kind", "latency")))
		t := time.NewTimer(r.Latency)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
	if hit(c.draw(), r.ErrorPercent) {
		c.count.Add(ctx, 1, metric.WithAttributes(attribute.String("target", string(target)), attribute.String("kind", "error")))
		return fmt.Errorf("%s: %w", target, ErrInjected)
	}
	return nil
}

// hit tells whether a draw in [0, 100) falls within percent: 0 never, 100 always.
func hit(draw, percent float64) bool { return draw < percent }

type exemptKey struct{}

// Exempt returns ctx marked so that Inject injects nothing for calls made with it: the change of
// the rules itself must get through the faults it lifts.
func Exempt(ctx context.Context) context.Context { return context.WithValue(ctx, exemptKey{}, true) }

func exempt(ctx context.Context) bool { b, _ := ctx.Value(exemptKey{}).(bool); return b }
