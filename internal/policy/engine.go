package policy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/interpreter"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// DefaultRefreshInterval is how often Run re-reads the stored policies when given 0: the time
// within which replicas converge on a change made through another replica.
const DefaultRefreshInterval = 2 * time.Second

// Options are an Engine's optional settings; the zero value works.
type Options struct {
	// CostLimit is the most an evaluation of one policy may cost (cel-go cost units: about one
	// per operation, more for string and list work). A policy cut off by it denies the request.
	// 0: DefaultCostLimit.
	CostLimit uint64
	// EstimatedCostLimit refuses, at write and load time, a policy whose estimated worst-case
	// cost exceeds it, the inputs being at their size bounds. 0: CostLimit. math.MaxUint64
	// turns the check off (the runtime limit still applies).
	EstimatedCostLimit uint64
	// InterruptCheckFrequency is how many comprehension iterations run between checks of the
	// evaluation's context. 0: DefaultInterruptCheckFrequency.
	InterruptCheckFrequency uint
	Logger                  *slog.Logger // nil: discard
	Meter                   metric.Meter // nil: no metrics
}

// Decision is the outcome of Evaluate. PolicyID and PolicyName name the policy that decided: the
// deny policy that matched (or failed, or ran out of budget), or the allow policy that matched;
// both are "" when no single policy decided.
type Decision struct {
	Allowed    bool
	PolicyID   string
	PolicyName string
	Reason     string
}

// compiled is a policy ready to evaluate. Immutable once built.
type compiled struct {
	Policy
	prog *program
	err  error // why a stored policy no longer compiles; evaluating it fails with this error
}

// set is the policies applying to one tenant: its own and the global ones, global first, each
// kind in ID order.
type set struct {
	deny, allow []*compiled
}

func (s *set) empty() bool { return len(s.deny) == 0 && len(s.allow) == 0 }

// snapshot is what Evaluate reads: immutable, replaced whole by a refresh.
type snapshot struct {
	ready   bool // false until a store-backed engine first read its store
	global  *set
	tenants map[string]*set
	byID    map[string]*compiled // every compiled policy, enabled or not, to reuse on refresh
	enabled int
}

// Engine evaluates the policies of files and of a store. Create it with NewEngine.
//
// Concurrency: Evaluate is safe for concurrent use and takes no lock: it reads an immutable
// snapshot through an atomic pointer. LoadDir, SetFilePolicies and Refresh build a new snapshot
// under a mutex (so two rebuilds never interleave) and publish it atomically.
type Engine struct {
	c     *compiler
	store Reader // nil: file policies only
	log   *slog.Logger

	snap atomic.Pointer[snapshot]

	mu     sync.Mutex  // serialises rebuilds; guards the fields below
	files  []*compiled // file policies, as last set
	stored []*compiled // store policies, as last read
	gen    int64       // the store generation stored holds
	loaded bool        // stored was read at least once

	allowed, denied   []metric.AddOption // precomputed, so counting a decision allocates nothing
	decisions         metric.Int64Counter
	costExceeded      metric.Int64Counter
	evalErrors        metric.Int64Counter
	refreshFailures   metric.Int64Counter
	loadedPolicies    metric.Int64Gauge
	brokenStoredGauge metric.Int64Gauge
}

// NewEngine returns an engine over store (nil: only the policies of files). An engine with a
// store denies every request until its first successful Refresh, so a kernel that could not read
// its policies does not run without them; call Refresh at start.
func NewEngine(store Reader, opts Options) (*Engine, error) {
	if opts.CostLimit == 0 {
		opts.CostLimit = DefaultCostLimit
	}
	if opts.EstimatedCostLimit == 0 {
		opts.EstimatedCostLimit = opts.CostLimit
	}
	if opts.InterruptCheckFrequency == 0 {
		opts.InterruptCheckFrequency = DefaultInterruptCheckFrequency
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Meter == nil {
		opts.Meter = noop.NewMeterProvider().Meter("")
	}
	c, err := newCompiler(opts.CostLimit, opts.EstimatedCostLimit, opts.InterruptCheckFrequency)
	if err != nil {
		return nil, err
	}
	e := &Engine{
		c: c, store: store, log: opts.Logger.With(slog.String("component", "policy")),
		allowed: []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(attribute.String("decision", "allow")))},
		denied:  []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(attribute.String("decision", "deny")))},
	}
	if err := e.instruments(opts.Meter); err != nil {
		return nil, fmt.Errorf("policy metrics: %w", err)
	}
	e.snap.Store(&snapshot{ready: store == nil, global: &set{}, tenants: map[string]*set{}, byID: map[string]*compiled{}})
	return e, nil
}

func (e *Engine) instruments(m metric.Meter) error {
	var err error
	if e.decisions, err = m.Int64Counter("nops_policy_decisions_total",
		metric.WithDescription("ABAC decisions of requests that reached the policy engine, by decision (allow, deny).")); err != nil {
		return err
	}
	if e.costExceeded, err = m.Int64Counter("nops_policy_cost_exceeded_total",
		metric.WithDescription("Policy evaluations cut off by the cost limit (each denied the request), by policy.")); err != nil {
		return err
	}
	if e.evalErrors, err = m.Int64Counter("nops_policy_evaluation_errors_total",
		metric.WithDescription("Policy evaluations that failed (a deny policy's failure denies the request; an allow policy's does not match), by policy.")); err != nil {
		return err
	}
	if e.refreshFailures, err = m.Int64Counter("nops_policy_refresh_failures_total",
		metric.WithDescription("Failed reads of the stored policies; the last policies read stay in force.")); err != nil {
		return err
	}
	if e.loadedPolicies, err = m.Int64Gauge("nops_policy_loaded",
		metric.WithDescription("Enabled policies in force, files and store together.")); err != nil {
		return err
	}
	if e.brokenStoredGauge, err = m.Int64Gauge("nops_policy_broken",
		metric.WithDescription("Enabled stored policies that no longer compile (a deny policy among them denies every request it applies to).")); err != nil {
		return err
	}
	return nil
}

// Compile checks expr as a policy expression: it must parse, type-check against the input model,
// be a bool and fit the estimated cost limit. The error is a *CompileError.
func (e *Engine) Compile(expr string) error {
	_, err := e.c.compile(expr)
	return err
}

// Evaluate decides a request that RBAC has already allowed (see the package documentation,
// "Decisions"). The policies that apply are the global ones and those of the principal's tenant.
// It never fails: every failure is a denial saying why.
func (e *Engine) Evaluate(ctx context.Context, in Input) Decision {
	var d Decision
	s := e.snap.Load()
	ps := s.global
	if t, ok := s.tenants[in.Principal.Tenant]; ok && in.Principal.Tenant != "" {
		ps = t
	}
	switch {
	case !s.ready:
		d = Decision{Reason: "policies are not loaded yet"}
	case ps.empty():
		// The common case costs no allocation: in is not copied to the heap on this path.
		d = Decision{Allowed: true, Reason: "no policies"}
	default:
		d = e.evaluate(ctx, ps, in)
	}
	if d.Allowed {
		e.decisions.Add(ctx, 1, e.allowed...)
	} else {
		e.decisions.Add(ctx, 1, e.denied...)
	}
	return d
}

// Applies reports whether any policy applies to the principals of tenant (or the policies are
// not loaded yet), so that a caller can skip gathering the attributes of a request that no
// policy would look at.
func (e *Engine) Applies(tenant string) bool {
	s := e.snap.Load()
	ps := s.global
	if t, ok := s.tenants[tenant]; ok && tenant != "" {
		ps = t
	}
	return !s.ready || !ps.empty()
}

// NeedsResourceAttributes reports whether a policy applying to the principals of tenant may read
// resource.labels or resource.criticality, which the caller must then load (an agent's, for
// instance); when none does, the caller may leave them empty and save the read. A policy that no
// longer compiles counts as needing them.
func (e *Engine) NeedsResourceAttributes(tenant string) bool {
	s := e.snap.Load()
	ps := s.global
	if t, ok := s.tenants[tenant]; ok && tenant != "" {
		ps = t
	}
	for _, list := range [][]*compiled{ps.deny, ps.allow} {
		for _, p := range list {
			if p.prog == nil || p.prog.resourceAttrs {
				return true
			}
		}
	}
	return false
}

// evaluate applies ps to in: deny policies first, then allow policies.
func (e *Engine) evaluate(ctx context.Context, ps *set, in Input) Decision {
	act := &activation{in: &in}
	for _, p := range ps.deny {
		match, err := e.run(ctx, p, act)
		switch {
		case err != nil && costExceeded(err):
			return deny(p, fmt.Sprintf("policy %s exceeded its cost limit", p.ID))
		case err != nil:
			return deny(p, fmt.Sprintf("deny policy %s could not be evaluated (%v): denied, failing closed", p.ID, err))
		case match:
			return deny(p, fmt.Sprintf("denied by policy %s (%s)", p.ID, p.Name))
		}
	}
	if len(ps.allow) == 0 {
		return Decision{Allowed: true, Reason: "no deny policy matched"}
	}
	for _, p := range ps.allow {
		match, err := e.run(ctx, p, act)
		switch {
		case err != nil && costExceeded(err):
			return deny(p, fmt.Sprintf("policy %s exceeded its cost limit", p.ID))
		case match:
			return Decision{Allowed: true, PolicyID: p.ID, PolicyName: p.Name, Reason: fmt.Sprintf("allowed by policy %s (%s)", p.ID, p.Name)}
		}
	}
	return Decision{Reason: "no allow policy matched"}
}

func deny(p *compiled, reason string) Decision {
	return Decision{PolicyID: p.ID, PolicyName: p.Name, Reason: reason}
}

// run evaluates one policy. An error is counted and logged at debug level: the decision carries
// it to the audit trail, and a policy failing on every request must not flood the log.
func (e *Engine) run(ctx context.Context, p *compiled, act *activation) (bool, error) {
	err := p.err
	if err == nil {
		var val ref.Val
		if p.prog.loops {
			val, _, err = p.prog.prg.ContextEval(ctx, act)
		} else {
			val, _, err = p.prog.prg.Eval(act)
		}
		if err == nil {
			if b, ok := val.(types.Bool); ok {
				return bool(b), nil
			}
			err = fmt.Errorf("result is %s, not bool", val.Type().TypeName())
		}
	}
	attrs := metric.WithAttributeSet(attribute.NewSet(attribute.String("policy", p.ID)))
	if costExceeded(err) {
		e.costExceeded.Add(ctx, 1, attrs)
	} else {
		e.evalErrors.Add(ctx, 1, attrs)
	}
	e.log.DebugContext(ctx, "policy evaluation failed", "policy", p.ID, "effect", string(p.Effect), "error", err)
	return false, err
}

// activation hands the input to a program without building a map per evaluation.
type activation struct{ in *Input }

func (a *activation) ResolveName(name string) (any, bool) {
	switch name {
	case "principal":
		return &a.in.Principal, true
	case "resource":
		return &a.in.Resource, true
	case "action":
		return a.in.Action, true
	case "capability":
		return a.in.Capability, true
	case "request":
		return &a.in.Request, true
	}
	return nil, false
}

func (a *activation) Parent() interpreter.Activation { return nil }

// SetFilePolicies replaces the file policies with ps, compiling each. If one does not compile,
// nothing changes and the error names each broken policy as "file:name: message".
func (e *Engine) SetFilePolicies(ps []FilePolicy) error {
	var (
		out  []*compiled
		errL []error
	)
	for _, fp := range ps {
		prog, err := e.c.compile(fp.Policy.Expression)
		if err != nil {
			errL = append(errL, fmt.Errorf("%s:%s: %w", fp.File, fp.Policy.Name, err))
			continue
		}
		out = append(out, &compiled{Policy: fp.Policy, prog: prog})
	}
	if err := errors.Join(errL...); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.files = out
	e.publish()
	return nil
}

// LoadDir reads the policy files of dir (see ReadDir) and makes their policies the engine's file
// policies. A file that does not parse, or a policy that does not compile, refuses the whole
// directory and leaves the engine as it was.
func (e *Engine) LoadDir(dir string) error {
	d, err := ReadDir(dir)
	if err != nil {
		return err
	}
	return e.SetFilePolicies(d.Policies)
}

// Refresh re-reads the stored policies when the store's generation says they changed, and
// publishes them. On failure the policies in force stay as they were.
func (e *Engine) Refresh(ctx context.Context) error {
	if e.store == nil {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	// The generation is read before the policies: a change committed between the two reads
	// yields newer policies under an older generation, which the next refresh reads again; the
	// other order could miss a change for good.
	gen, err := e.store.PolicyGeneration(ctx)
	if err != nil {
		e.refreshFailures.Add(ctx, 1)
		return fmt.Errorf("read policy generation: %w", err)
	}
	if e.loaded && gen == e.gen {
		return nil
	}
	ps, err := e.store.AllPolicies(ctx)
	if err != nil {
		e.refreshFailures.Add(ctx, 1)
		return fmt.Errorf("read policies: %w", err)
	}
	prev := e.snap.Load().byID
	stored := make([]*compiled, 0, len(ps))
	for _, p := range ps {
		c := &compiled{Policy: p}
		old, ok := prev[p.ID]
		switch {
		case !p.Enabled:
			// Never evaluated: nothing to compile.
		case ok && old.Expression == p.Expression && (old.prog != nil || old.err != nil):
			// A program depends on its expression alone: reuse it.
			c.prog, c.err = old.prog, old.err
		default:
			// A stored policy compiled when it was written; one that no longer does (a kernel
			// upgrade changed the language) stays in force as a failing policy, which fails
			// closed if it denies.
			if c.prog, c.err = e.c.compile(p.Expression); c.err != nil {
				e.log.ErrorContext(ctx, "stored policy no longer compiles", "policy", p.ID, "tenant", p.TenantID, "effect", string(p.Effect), "error", c.err)
			}
		}
		stored = append(stored, c)
	}
	e.stored, e.gen, e.loaded = stored, gen, true
	e.publish()
	return nil
}

// Run refreshes every interval (0: DefaultRefreshInterval) until ctx ends, then returns nil.
// Failures are logged and retried on the next tick.
func (e *Engine) Run(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		interval = DefaultRefreshInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := e.Refresh(ctx); err != nil && ctx.Err() == nil {
				e.log.WarnContext(ctx, "policy refresh failed; the policies in force stay", "error", err)
			}
		}
	}
}

// publish builds the snapshot of the current files and stored policies and makes it the one
// Evaluate reads. The caller holds e.mu.
func (e *Engine) publish() {
	s := &snapshot{
		ready: e.store == nil || e.loaded, global: &set{}, tenants: map[string]*set{},
		byID: make(map[string]*compiled, len(e.stored)),
	}
	var broken int64
	var tenantOwn []*compiled
	for _, src := range [][]*compiled{e.files, e.stored} {
		for _, p := range src {
			s.byID[p.ID] = p
			if !p.Enabled {
				continue
			}
			s.enabled++
			if p.err != nil {
				broken++
			}
			if p.TenantID == "" {
				s.global.add(p)
			} else {
				tenantOwn = append(tenantOwn, p)
			}
		}
	}
	s.global.sort()
	own := map[string]*set{}
	for _, p := range tenantOwn {
		t := own[p.TenantID]
		if t == nil {
			t = &set{}
			own[p.TenantID] = t
		}
		t.add(p)
	}
	for id, t := range own {
		t.sort()
		s.tenants[id] = &set{
			deny:  slices.Concat(s.global.deny, t.deny),
			allow: slices.Concat(s.global.allow, t.allow),
		}
	}
	e.snap.Store(s)
	ctx := context.Background()
	e.loadedPolicies.Record(ctx, int64(s.enabled))
	e.brokenStoredGauge.Record(ctx, broken)
}

func (s *set) add(p *compiled) {
	if p.Effect == EffectDeny {
		s.deny = append(s.deny, p)
	} else {
		s.allow = append(s.allow, p)
	}
}

func (s *set) sort() {
	byID := func(a, b *compiled) int { return cmp.Compare(a.ID, b.ID) }
	slices.SortFunc(s.deny, byID)
	slices.SortFunc(s.allow, byID)
}
