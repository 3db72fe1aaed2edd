package flags

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"cel.dev/cel-go/cel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// Reason says why an evaluation answered its variant; the strings are OpenFeature's.
type Reason string

// The reasons of an evaluation.
const (
	ReasonTargetingMatch Reason = "TARGETING_MATCH" // a rule matched
	ReasonDefault        Reason = "DEFAULT"         // no rule matched: the default variant
	ReasonDisabled       Reason = "DISABLED"        // the flag is disabled: the default variant
)

// DefaultRefreshInterval is how often an Evaluator reloads every flag even without a Notify: the
// bound on how stale a replica can be when it misses the bus's change events.
const DefaultRefreshInterval = 5 * time.Second

// Subject is who a flag is evaluated for: a tenant, and any attributes the caller adds.
type Subject struct {
	Tenant     Tenant
	Attributes map[string]any
}

// Result is one evaluation.
type Result struct {
	Key      string
	Type     Type
	Variant  string
	Reason   Reason
	Rule     int   // index of the rule that matched, -1 when none did
	Revision int64 // the revision of the flag this replica evaluated
}

// Bool reports whether the variant is "true", as a boolean flag answers it.
func (r Result) Bool() bool { return r.Variant == VariantTrue }

// compiled is one flag ready to evaluate.
type compiled struct {
	flag  Flag
	rules []cel.Program // one per flag.Rules; nil for a rule that no longer compiles
}

// snapshot is an immutable view of every flag.
type snapshot struct {
	flags map[string]*compiled
}

// EvaluatorOptions are an Evaluator's optional settings; the zero value works.
type EvaluatorOptions struct {
	RefreshInterval time.Duration // ≤ 0: DefaultRefreshInterval
	Meter           metric.Meter  // nil: no metrics
	Logger          *slog.Logger  // nil: discard
}

// Evaluator keeps every flag compiled in memory and evaluates them without I/O. Run keeps it up
// to date; Notify asks for a reload at once. Safe for concurrent use: evaluations read an
// immutable snapshot through an atomic pointer, and only Run's goroutine (or Reload) replaces it.
type Evaluator struct {
	store  Store
	every  time.Duration
	log    *slog.Logger
	evals  metric.Int64Counter
	snap   atomic.Pointer[snapshot]
	kick   chan struct{}
	loadMu sync.Mutex // serialises reloads, so an older read never replaces a newer snapshot
}

// NewEvaluator returns an Evaluator over store with nothing loaded; call Reload or Run.
func NewEvaluator(store Store, opts EvaluatorOptions) (*Evaluator, error) {
	if store == nil {
		return nil, fmt.Errorf("new flag evaluator: nil store")
	}
	if opts.RefreshInterval <= 0 {
		opts.RefreshInterval = DefaultRefreshInterval
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Meter == nil {
		opts.Meter = noop.NewMeterProvider().Meter("nops/flags")
	}
	evals, err := opts.Meter.Int64Counter("nops_flag_evaluations_total",
		metric.WithDescription("Feature flag evaluations, by flag, variant answered and reason."),
		metric.WithUnit("{evaluation}"))
	if err != nil {
		return nil, fmt.Errorf("flag evaluation counter: %w", err)
	}
	e := &Evaluator{store: store, every: opts.RefreshInterval, log: opts.Logger, evals: evals, kick: make(chan struct{}, 1)}
	e.snap.Store(&snapshot{flags: map[string]*compiled{}})
	return e, nil
}

// RefreshInterval returns the interval of Run's periodic reloads.
func (e *Evaluator) RefreshInterval() time.Duration { return e.every }

// Notify asks Run to reload now (a flag changed). It never blocks.
func (e *Evaluator) Notify() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// Run reloads at once, then on every Notify and every refresh interval, until ctx ends. Load
// failures are logged and the last snapshot is kept (flags keep answering during a database
// outage).
func (e *Evaluator) Run(ctx context.Context) error {
	t := time.NewTicker(e.every)
	defer t.Stop()
	for {
		if err := e.Reload(ctx); err != nil && ctx.Err() == nil {
			e.log.WarnContext(ctx, "reload feature flags; keeping the last ones", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-e.kick:
		case <-t.C:
		}
	}
}

// Reload reads every flag from the store and makes them the ones evaluated.
func (e *Evaluator) Reload(ctx context.Context) error {
	e.loadMu.Lock()
	defer e.loadMu.Unlock()
	next := &snapshot{flags: map[string]*compiled{}}
	after := ""
	for {
		page, err := e.store.ListFlags(ctx, after, MaxListLimit)
		if err != nil {
			return fmt.Errorf("load flags: %w", err)
		}
		for _, f := range page {
			next.flags[f.Key] = e.compile(f)
		}
		if len(page) < MaxListLimit {
			break
		}
		after = page[len(page)-1].Key
	}
	e.snap.Store(next)
	return nil
}

// compile reuses the programs of an unchanged flag from the current snapshot.
func (e *Evaluator) compile(f Flag) *compiled {
	if cur, ok := e.snap.Load().flags[f.Key]; ok && cur.flag.Revision == f.Revision && cur.flag.CreatedAt.Equal(f.CreatedAt) {
		return cur
	}
	c := &compiled{flag: f, rules: make([]cel.Program, len(f.Rules))}
	for i, r := range f.Rules {
		prg, err := compile(r.Expression)
		if err != nil {
			// Stored rules were validated on write; one refused now (a newer kernel's syntax
			// during an upgrade) never matches rather than failing the flag.
			e.log.Warn("flag rule does not compile; it never matches", "flag", f.Key, "rule", i, "error", err)
			continue
		}
		c.rules[i] = prg
	}
	return c
}

// Flag returns the flag of key as this replica evaluates it.
func (e *Evaluator) Flag(key string) (Flag, bool) {
	c, ok := e.snap.Load().flags[key]
	if !ok {
		return Flag{}, false
	}
	return c.flag, true
}

// Evaluate evaluates the flag of key for s; ok is false when there is no such flag. A rule whose
// expression fails at run time (an attribute it reads is missing) does not match.
func (e *Evaluator) Evaluate(ctx context.Context, key string, s Subject) (Result, bool) {
	c, ok := e.snap.Load().flags[key]
	if !ok {
		return Result{}, false
	}
	f := c.flag
	res := Result{Key: f.Key, Type: f.Type, Variant: f.DefaultVariant, Reason: ReasonDefault, Rule: -1, Revision: f.Revision}
	if !f.Enabled {
		res.Reason = ReasonDisabled
	} else if len(c.rules) > 0 {
		attrs := s.Attributes
		if attrs == nil {
			attrs = map[string]any{}
		}
		vars := map[string]any{"tenant": s.Tenant, "attributes": attrs}
		for i, prg := range c.rules {
			if prg == nil {
				continue
			}
			out, _, err := prg.ContextEval(ctx, vars)
			if err != nil {
				continue
			}
			if b, isBool := out.Value().(bool); isBool && b {
				res.Variant, res.Reason, res.Rule = f.Rules[i].Variant, ReasonTargetingMatch, i
				break
			}
		}
	}
	e.evals.Add(ctx, 1, metric.WithAttributes(attribute.String("flag", f.Key), attribute.String("variant", res.Variant), attribute.String("reason", string(res.Reason))))
	return res, true
}
