package invoke

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/hedgepolicy"
	"github.com/failsafe-go/failsafe-go/retrypolicy"
	"github.com/oklog/ulid/v2"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"

	"github.com/nops-kernel/nops/internal/balancer"
	"github.com/nops-kernel/nops/internal/egress"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/registry"
	"github.com/nops-kernel/nops/internal/routing"
)

// Headers the kernel sends to agents and callers.
const (
	// HeaderTimeout carries the call's remaining time budget in milliseconds: to the agent on
	// every attempt, and from a caller that wants a shorter deadline than the default.
	HeaderTimeout = "Nops-Timeout-Ms"
	// HeaderInvocation names the invocation ("inv_…") on the way to the agent and back.
	HeaderInvocation = "Nops-Invocation-Id"
	// HeaderAgent names the agent that answered, on the response to the caller.
	HeaderAgent = "Nops-Agent-Id"
	// HeaderTenant and HeaderCapability tell the agent whose call it serves.
	HeaderTenant     = "Nops-Tenant"
	HeaderCapability = "Nops-Capability"
)

// InvocationPrefix starts every invocation id.
const InvocationPrefix = "inv_"

// NewInvocationID returns a fresh invocation id.
func NewInvocationID() string { return InvocationPrefix + strings.ToLower(ulid.Make().String()) }

// Outcomes of a call, the outcome label of the metrics.
const (
	OutcomeOK          = "ok"           // the agent answered 1xx–3xx
	OutcomeClientError = "client_error" // the agent answered 4xx
	OutcomeError       = "error"        // the agent answered 5xx, or the call failed in transport
	OutcomeTimeout     = "timeout"      // the deadline passed
	OutcomeRejected    = "rejected"     // no agent could take the call (none, breakers open, bulkheads full, egress refused, invalid input)
)

// Routes reads a capability's routing table; *routing.Cache implements it.
type Routes interface {
	Get(ctx context.Context, tenantID, capability string) (*routing.Route, error)
}

// BreakerConfig tunes the per-agent circuit breakers.
type BreakerConfig struct {
	Failures  uint          // consecutive failures that open the breaker; default 5
	Delay     time.Duration // how long it stays open before letting probes through; default 10 s
	Successes uint          // successful probes in half-open that close it; default 2
}

// Config tunes the Service. Zero fields take the defaults.
type Config struct {
	Timeout        time.Duration // call deadline when neither the route nor the caller sets one; default 30 s
	MaxTimeout     time.Duration // the longest deadline a route or caller may ask for; default 10 min
	AttemptTimeout time.Duration // the longest one attempt waits for response headers; default 10 s
	MaxAttempts    int           // first attempt + retries; default 3
	BackoffBase    time.Duration // first retry's backoff ceiling (full jitter); default 25 ms
	BackoffMax     time.Duration // backoff ceiling; default 1 s
	RetryBudget    RetryBudget
	Breaker        BreakerConfig
	AgentInFlight  int           // bulkhead: concurrent calls per agent; default 256
	CandidatesTTL  time.Duration // how long routable agents are cached; default 1 s, negative turns the cache off
	Balancer       balancer.Config
	MaxBufferedOut int64 // Do: the most response bytes kept; default 1 MiB
}

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.Timeout, 30*time.Second)
	def(&c.MaxTimeout, 10*time.Minute)
	def(&c.AttemptTimeout, 10*time.Second)
	def(&c.BackoffBase, 25*time.Millisecond)
	def(&c.BackoffMax, time.Second)
	def(&c.Breaker.Delay, 10*time.Second)
	if c.CandidatesTTL == 0 {
		c.CandidatesTTL = time.Second
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 3
	}
	if c.Breaker.Failures == 0 {
		c.Breaker.Failures = 5
	}
	if c.Breaker.Successes == 0 {
		c.Breaker.Successes = 2
	}
	if c.AgentInFlight <= 0 {
		c.AgentInFlight = 256
	}
	if c.MaxBufferedOut <= 0 {
		c.MaxBufferedOut = 1 << 20
	}
	c.Timeout = min(c.Timeout, c.MaxTimeout)
	return c
}

// Completion describes one finished call, for the invocation.completed and billing.usage events.
type Completion struct {
	InvocationID  string
	Tenant        string
	Capability    string
	AgentID       string // "" when no agent was chosen
	RequestID     string
	Status        int    // the HTTP status the caller got
	Outcome       string // one of the Outcome constants
	Attempts      int
	RequestBytes  int64
	ResponseBytes int64
	StartedAt     time.Time
	Duration      time.Duration
	TraceParent   string
	Async         bool
	Error         string // the problem detail when the kernel answered with an error
}

// Deps are the Service's collaborators. Agents and Transport are required.
type Deps struct {
	Agents Agents
	Routes Routes // nil: no routing tables (every agent weight 1)
	// Transport carries calls to agents: egress.NewAgentTransport (checked dials, no proxy, mTLS
	// with the kernel's SVID to https endpoints). Each request's context names its agent
	// (egress.WithAgent), so the transport can check the SPIFFE ID the agent presents.
	Transport http.RoundTripper
	Logger    *slog.Logger
	Meter     metric.Meter
	// Propagator injects the call's trace context into the request to the agent.
	Propagator propagation.TextMapPropagator
	// OnBlocked is called when the egress policy refused an agent's address (for the audit
	// trail); it must not block for long.
	OnBlocked func(ctx context.Context, tenant, agentID string, err *egress.BlockedError)
	// OnComplete is called once per finished call, after the last byte was relayed.
	OnComplete func(ctx context.Context, c Completion)
	// OnBreaker is called when an agent's breaker changes state ("closed", "half_open", "open").
	OnBreaker func(tenant, agentID, from, to string)
	// AdmitAgent, when set, says whether calls may go to agents of a criticality class now: nil,
	// or the refusal (the degraded mode shed_best_effort sheds best_effort agents first). Refused
	// agents are left out of the call; when none is left, the refusal is the call's answer.
	AdmitAgent func(ctx context.Context, criticality string) error
	Now        func() time.Time
}

// Service routes calls to agents. It is safe for concurrent use.
type Service struct {
	cfg     Config
	deps    Deps
	now     func() time.Time
	client  *http.Client
	cands   *candidateCache
	schemas *schemaCache
	bal     *balancer.Balancer
	budget  *budget
	guards  *guards
	retry   retrypolicy.RetryPolicy[*attempt]
	hedges  sync.Map // hedgeKey → hedgepolicy.HedgePolicy[*attempt]
	bufs    sync.Pool
	m       *instruments
	log     *slog.Logger
}

// New returns a Service.
func New(cfg Config, deps Deps) (*Service, error) {
	if deps.Agents == nil || deps.Transport == nil {
		return nil, errors.New("invoke: agents and transport are required")
	}
	cfg = cfg.withDefaults()
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Meter == nil {
		deps.Meter = noop.NewMeterProvider().Meter("")
	}
	s := &Service{
		cfg: cfg, deps: deps, now: deps.Now,
		client:  egress.Client(deps.Transport),
		schemas: newSchemaCache(),
		budget:  newBudget(cfg.RetryBudget, deps.Now),
		log:     deps.Logger.With(slog.String("component", "invoke")),
	}
	s.cands = newCandidateCache(deps.Agents, max(cfg.CandidatesTTL, 0), deps.Now)
	s.bufs.New = func() any { b := make([]byte, 32<<10); return &b }
	var err error
	if s.m, err = newInstruments(deps.Meter); err != nil {
		return nil, err
	}
	bc := cfg.Balancer
	userEject := bc.OnEject
	bc.OnEject = func(c balancer.Candidate, until time.Time) {
		s.m.ejected(c.TenantID, c.AgentID)
		if userEject != nil {
			userEject(c, until)
		}
	}
	s.bal = balancer.New(bc)
	s.guards = newGuards(cfg, s.m, deps.OnBreaker)
	if err := s.m.observe(deps.Meter, s.guards, s.bal); err != nil {
		return nil, err
	}
	s.retry = retrypolicy.NewBuilder[*attempt]().
		HandleIf(func(_ *attempt, err error) bool {
			var re *retryableError
			return errors.As(err, &re)
		}).
		WithMaxAttempts(cfg.MaxAttempts).
		WithDelayFunc(func(exec failsafe.ExecutionAttempt[*attempt]) time.Duration {
			// Exponential backoff with full jitter: uniform in [0, min(max, base·2^(n-1))).
			ceil := cfg.BackoffBase << min(max(exec.Attempts()-1, 0), 20)
			return time.Duration(rand.Int64N(int64(min(ceil, cfg.BackoffMax)) + 1))
		}).
		ReturnLastFailure().
		Build()
	return s, nil
}

// Balancer returns the Service's balancer (for tests and diagnostics).
func (s *Service) Balancer() *balancer.Balancer { return s.bal }

// Request is one call of a capability.
type Request struct {
	TenantID     string
	Capability   string
	InvocationID string      // "" → a fresh one
	RequestID    string      // the caller's request id, forwarded as X-Request-ID
	Header       http.Header // the caller's headers; credentials and hop-by-hop headers are not forwarded
	Body         []byte
	// Timeout shortens the call's deadline (0: the route's, else the default); the ctx's own
	// deadline applies too.
	Timeout time.Duration
	Async   bool // the call runs for an async invocation (Completion.Async)
}

// Response is a buffered answer of Do.
type Response struct {
	Status  int
	Header  http.Header
	Body    []byte
	AgentID string
}

// retryableError marks a failed attempt that another attempt may repeat.
type retryableError struct{ err error }

func (e *retryableError) Error() string { return e.err.Error() }
func (e *retryableError) Unwrap() error { return e.err }

// Serve runs req and relays the agent's answer to w, streaming its body. It returns an error —
// for the caller to write as a problem — only when nothing was written to w.
func (s *Service) Serve(ctx context.Context, w http.ResponseWriter, req Request) error {
	c, err := s.start(ctx, req)
	if err != nil {
		return err
	}
	defer c.end()
	// The server's write timeout is for ordinary responses; a relayed answer may stream until
	// the call's deadline.
	if err := http.NewResponseController(w).SetWriteDeadline(c.deadline.Add(time.Second)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		s.log.DebugContext(ctx, "extend the write deadline", "error", err)
	}
	win, err := c.run()
	if err != nil {
		c.complete(statusOf(err), 0, err)
		return err
	}
	h := w.Header()
	egress.InboundHeader(h, win.resp.Header)
	h.Set(HeaderAgent, win.agent.ID)
	h.Set(HeaderInvocation, c.id)
	w.WriteHeader(win.resp.StatusCode)
	n, copyErr := s.relay(w, win.resp)
	win.finish(n, copyErr)
	c.complete(win.resp.StatusCode, n, copyErr)
	return nil
}

// Do runs req and returns the agent's answer with its body read (at most
// Config.MaxBufferedOut bytes; a longer answer is an error).
func (s *Service) Do(ctx context.Context, req Request) (Response, error) {
	c, err := s.start(ctx, req)
	if err != nil {
		return Response{}, err
	}
	defer c.end()
	win, err := c.run()
	if err != nil {
		c.complete(statusOf(err), 0, err)
		return Response{}, err
	}
	body, readErr := io.ReadAll(io.LimitReader(win.resp.Body, s.cfg.MaxBufferedOut+1))
	if readErr == nil && int64(len(body)) > s.cfg.MaxBufferedOut {
		readErr = errs.New(errs.BadGateway, "the agent's answer is longer than %d bytes", s.cfg.MaxBufferedOut)
	}
	win.finish(int64(len(body)), readErr)
	if readErr != nil {
		if errs.As(readErr) == nil {
			readErr = errs.Wrap(errs.BadGateway, readErr, "the agent's answer broke off")
		}
		c.complete(statusOf(readErr), int64(len(body)), readErr)
		return Response{}, readErr
	}
	h := http.Header{}
	egress.InboundHeader(h, win.resp.Header)
	c.complete(win.resp.StatusCode, int64(len(body)), nil)
	return Response{Status: win.resp.StatusCode, Header: h, Body: body, AgentID: win.agent.ID}, nil
}

// relay copies the agent's body to w, flushing after every read when the length is unknown
// (SSE, chunked) so nothing waits in a buffer.
func (s *Service) relay(w http.ResponseWriter, resp *http.Response) (int64, error) {
	bp := s.bufs.Get().(*[]byte)
	defer s.bufs.Put(bp)
	buf := *bp
	rc := http.NewResponseController(w)
	flush := resp.ContentLength < 0
	var n int64
	for {
		k, rerr := resp.Body.Read(buf)
		if k > 0 {
			wk, werr := w.Write(buf[:k])
			n += int64(wk)
			if werr != nil {
				return n, fmt.Errorf("write to the caller: %w", werr)
			}
			if flush {
				if err := rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
					return n, fmt.Errorf("flush to the caller: %w", err)
				}
			}
		}
		if rerr == io.EOF {
			if !flush {
				// The whole answer is written: send it now, not when the handler returns, so
				// that the caller does not wait for the call's accounting (complete) and the
				// middleware's. A failure here is the caller's connection, not the agent's.
				if err := rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
					s.log.Debug("flush the answer to the caller", "error", err)
				}
			}
			return n, nil
		}
		if rerr != nil {
			return n, fmt.Errorf("read the agent's answer: %w", rerr)
		}
	}
}

// call is the state of one Request across its attempts.
type call struct {
	s         *Service
	ctx       context.Context
	cancel    context.CancelFunc
	req       Request
	id        string
	started   time.Time
	deadline  time.Time
	route     *routing.Route
	tiers     [][]balancer.Candidate
	agents    map[string]registry.Agent
	retryable bool
	sticky    string
	outbound  http.Header // the headers every attempt sends, before the per-attempt ones

	mu       sync.Mutex
	tried    map[string]bool
	attempts []*attempt
	lastErr  error // the most telling failure so far, answered when no agent is left
	ended    bool
	nAttempt atomic.Int32
	winner   *attempt
	done     bool
}

// start resolves the candidates of req and fixes its deadline.
func (s *Service) start(ctx context.Context, req Request) (*call, error) {
	if req.InvocationID == "" {
		req.InvocationID = NewInvocationID()
	}
	c := &call{s: s, req: req, id: req.InvocationID, started: s.now(), tried: map[string]bool{}}
	route, err := s.route(ctx, req)
	if err != nil {
		return nil, err
	}
	c.route = route
	timeout := s.cfg.Timeout
	if route != nil && route.TimeoutMs > 0 {
		timeout = time.Duration(route.TimeoutMs) * time.Millisecond
	}
	if req.Timeout > 0 {
		timeout = min(timeout, req.Timeout)
	}
	if v := req.Header.Get(HeaderTimeout); v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ms <= 0 {
			return nil, errs.Field("header."+HeaderTimeout, "must be a positive number of milliseconds")
		}
		timeout = min(timeout, time.Duration(ms)*time.Millisecond)
	}
	timeout = min(timeout, s.cfg.MaxTimeout)
	c.ctx, c.cancel = context.WithTimeout(ctx, timeout)
	c.deadline, _ = c.ctx.Deadline()
	agents, err := s.cands.get(c.ctx, req.TenantID, req.Capability)
	if err != nil {
		c.cancel()
		return nil, fmt.Errorf("routable agents: %w", err)
	}
	if len(agents) == 0 {
		c.cancel()
		s.m.finished(req.TenantID, req.Capability, "", OutcomeRejected, 0)
		return nil, errs.New(errs.NotFound, "no live agent of this tenant offers capability %q", req.Capability)
	}
	if agents, err = s.admitted(c.ctx, agents); err != nil {
		c.cancel()
		s.m.finished(req.TenantID, req.Capability, "", OutcomeRejected, 0)
		return nil, err
	}
	c.agents = make(map[string]registry.Agent, len(agents))
	for _, tier := range routing.Resolve(route, agents) {
		var cands []balancer.Candidate
		for _, wa := range tier {
			if wa.Weight <= 0 {
				continue
			}
			c.agents[wa.Agent.ID] = wa.Agent
			cands = append(cands, candidateOf(wa.Agent, wa.Weight))
		}
		if len(cands) > 0 {
			c.tiers = append(c.tiers, cands)
		}
	}
	if len(c.tiers) == 0 {
		c.cancel()
		s.m.finished(req.TenantID, req.Capability, "", OutcomeRejected, 0)
		return nil, errs.New(errs.Unavailable, "the routing table of capability %q routes to no live agent", req.Capability)
	}
	c.retryable = req.Header.Get("Idempotency-Key") != "" || (route != nil && route.Retryable)
	if route != nil && route.StickyHeader != "" {
		c.sticky = req.Header.Get(route.StickyHeader)
	}
	c.outbound = http.Header{}
	egress.OutboundHeader(c.outbound, req.Header)
	c.outbound.Del(HeaderTimeout)
	c.outbound.Set(HeaderInvocation, c.id)
	c.outbound.Set(HeaderTenant, req.TenantID)
	c.outbound.Set(HeaderCapability, req.Capability)
	if req.RequestID != "" {
		c.outbound.Set("X-Request-ID", req.RequestID)
	}
	if s.deps.Propagator != nil {
		s.deps.Propagator.Inject(ctx, propagation.HeaderCarrier(c.outbound))
	}
	return c, nil
}

func (s *Service) route(ctx context.Context, req Request) (*routing.Route, error) {
	if s.deps.Routes == nil {
		return nil, nil
	}
	r, err := s.deps.Routes.Get(ctx, req.TenantID, req.Capability)
	if err != nil {
		return nil, fmt.Errorf("routing table of %s: %w", req.Capability, err)
	}
	return r, nil
}

func candidateOf(a registry.Agent, weight float64) balancer.Candidate {
	return balancer.Candidate{
		TenantID: a.TenantID, AgentID: a.ID, Weight: weight,
		Stale: a.Status == registry.StatusStale,
		Reported: balancer.Reported{
			InFlight: a.Load.InFlight, FreeCapacity: a.Load.FreeCapacity,
			ErrorRate: a.Load.ErrorRate, P95Ms: a.Load.P95Ms,
		},
	}
}

// run executes the attempts under the retry (and hedge) policies and returns the winning one.
func (c *call) run() (*attempt, error) {
	s := c.s
	policies := []failsafe.Policy[*attempt]{s.retry}
	if c.hedgeDelay() > 0 {
		policies = append(policies, s.hedgePolicy(c.route.Hedge.DelayMs, c.route.Hedge.MaxExtra))
	}
	win, err := failsafe.With(policies...).WithContext(c.ctx).GetWithExecution(c.attempt)
	if err != nil {
		return nil, c.finalError(err)
	}
	c.mu.Lock()
	c.winner = win
	c.mu.Unlock()
	return win, nil
}

type hedgeKey struct{ delayMs, maxExtra int }

func (s *Service) hedgePolicy(delayMs, maxExtra int) hedgepolicy.HedgePolicy[*attempt] {
	k := hedgeKey{delayMs, max(maxExtra, 1)}
	if p, ok := s.hedges.Load(k); ok {
		return p.(hedgepolicy.HedgePolicy[*attempt])
	}
	p := hedgepolicy.NewBuilderWithDelay[*attempt](time.Duration(delayMs) * time.Millisecond).
		WithMaxHedges(k.maxExtra).
		CancelIf(func(_ *attempt, err error) bool { return err == nil }).
		Build()
	actual, _ := s.hedges.LoadOrStore(k, p)
	return actual.(hedgepolicy.HedgePolicy[*attempt])
}

// finalError turns the executor's error into the error the caller gets.
func (c *call) finalError(err error) error {
	if errors.Is(err, context.DeadlineExceeded) || (c.ctx.Err() != nil && errors.Is(c.ctx.Err(), context.DeadlineExceeded)) {
		return errs.Wrap(errs.GatewayTimeout, err, "no answer from an agent within the call's deadline")
	}
	var re *retryableError
	if errors.As(err, &re) {
		err = re.err
	}
	if e := errs.As(err); e != nil {
		return err
	}
	if errors.Is(err, context.Canceled) {
		return errs.Wrap(errs.Unavailable, err, "the call was cancelled")
	}
	return errs.Wrap(errs.BadGateway, err, "the agent call failed")
}

// admitted returns the agents whose criticality class AdmitAgent lets through now, or its
// refusal when it lets none through. The cached slice is never modified.
func (s *Service) admitted(ctx context.Context, agents []registry.Agent) ([]registry.Agent, error) {
	if s.deps.AdmitAgent == nil {
		return agents, nil
	}
	var refusal error
	verdict := map[registry.Criticality]error{}
	kept, copied := agents, false
	for i, a := range agents {
		err, seen := verdict[a.Criticality]
		if !seen {
			err = s.deps.AdmitAgent(ctx, string(a.Criticality))
			verdict[a.Criticality] = err
		}
		switch {
		case err != nil && !copied: // the first refused agent: keep a copy of the ones before it
			refusal, kept, copied = err, append(make([]registry.Agent, 0, len(agents)-1), agents[:i]...), true
		case err != nil:
			refusal = err
		case copied:
			kept = append(kept, a)
		}
	}
	if len(kept) == 0 {
		return nil, refusal
	}
	return kept, nil
}

// pick chooses an agent not tried yet, with a free breaker and bulkhead permit, and begins the
// attempt of the given kind on it. The attempt is complete when end can see it (c.attempts,
// under c.mu): a hedge picked as the call ends must not have end release it before it began.
func (c *call) pick(kind string) (*attempt, error) {
	s := c.s
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended {
		return nil, context.Canceled // a hedge or retry due after the call ended
	}
	skip := func(id string) bool { return c.tried[id] }
	for _, tier := range c.tiers {
		for {
			var cand balancer.Candidate
			var ok bool
			if c.sticky != "" {
				cand, ok = s.bal.PickSticky(c.sticky, tier, skip)
			} else {
				cand, ok = s.bal.Pick(tier, skip)
			}
			if !ok {
				break
			}
			c.tried[cand.AgentID] = true
			agent := c.agents[cand.AgentID]
			if raw := inputSchema(agent, c.req.Capability); raw != nil {
				if err := s.schemas.validateInput(raw, c.req.Header.Get("Content-Type"), c.req.Body); err != nil {
					return nil, err // the caller's input: no other agent makes it valid
				}
			}
			g := s.guards.get(cand.TenantID, cand.AgentID)
			if !g.bh.TryAcquirePermit() {
				c.note(errs.New(errs.Unavailable, "every eligible agent is at its in-flight limit"))
				continue
			}
			if !g.cb.TryAcquirePermit() {
				g.bh.ReleasePermit()
				c.note(errs.New(errs.Unavailable, "the circuit breaker of every eligible agent is open"))
				continue
			}
			a := &attempt{c: c, agent: c.agents[cand.AgentID], cand: cand, guard: g, kind: kind, bal: s.bal.Begin(cand)}
			s.m.inFlight(c.req.TenantID, c.req.Capability, a.agent.ID, 1)
			c.attempts = append(c.attempts, a)
			return a, nil
		}
	}
	if c.lastErr != nil {
		return nil, c.lastErr
	}
	return nil, errs.New(errs.Unavailable, "no agent is available for capability %q", c.req.Capability)
}

// note keeps err as the answer if no better one comes; agent failures beat "no agent" errors.
// Caller holds c.mu.
func (c *call) note(err error) {
	if c.lastErr == nil || errs.Is(c.lastErr, errs.Unavailable) {
		c.lastErr = err
	}
}

// attempt is one request to one agent.
type attempt struct {
	c      *call
	agent  registry.Agent
	cand   balancer.Candidate
	guard  *guard
	bal    *balancer.Attempt
	cancel context.CancelFunc
	resp   *http.Response
	kind   string
	sent   time.Time
	ttfb   time.Duration
	once   sync.Once
}

// attempt is the failsafe execution function: one request to one chosen agent.
func (c *call) attempt(exec failsafe.Execution[*attempt]) (*attempt, error) {
	s := c.s
	kind := "first"
	switch {
	case exec.IsHedge():
		kind = "hedge"
	case exec.IsRetry():
		kind = "retry"
	}
	// Retries draw from the retry budget. Hedges do not: hedging is opted into per capability
	// and bounded per call by its max_extra, and a hedge refused would leave the call waiting on
	// the straggler it exists to route around (until the ejection of that agent).
	if kind == "first" {
		s.budget.deposit()
	} else if kind == "retry" && !s.budget.withdraw() {
		s.m.budgetExhausted(c.req.TenantID, c.req.Capability)
		c.mu.Lock()
		err := c.lastErr
		c.mu.Unlock()
		if err == nil {
			err = errs.New(errs.Unavailable, "the retry budget is exhausted")
		}
		return nil, err // not retryable: ends the call with the last failure
	}
	a, err := c.pick(kind)
	if err != nil {
		return nil, err
	}
	c.nAttempt.Add(1)
	s.m.attempt(c.req.TenantID, c.req.Capability, a.agent.ID, kind)
	return a.send(exec)
}

func (a *attempt) send(exec failsafe.Execution[*attempt]) (*attempt, error) {
	c, s := a.c, a.c.s
	remaining := time.Until(c.deadline)
	if remaining <= 0 {
		a.finish(0, context.DeadlineExceeded)
		return nil, context.DeadlineExceeded
	}
	target, err := agentURL(a.agent.Endpoint, c.req.Capability)
	if err != nil {
		a.finish(0, err)
		return nil, errs.Wrap(errs.BadGateway, err, "the agent's endpoint is not a valid URL")
	}
	actx, cancel := context.WithCancel(c.ctx)
	// The agent in the context tells the egress transport which SPIFFE ID an https agent must present.
	req, err := http.NewRequestWithContext(egress.WithAgent(actx, a.agent.TenantID, a.agent.ID), http.MethodPost, target, bytes.NewReader(c.req.Body))
	if err != nil {
		cancel()
		a.finish(0, err)
		return nil, errs.Wrap(errs.BadGateway, err, "build the request to the agent")
	}
	// A hedge that lost may still be here when the call ends: end() reads the attempt's cancel
	// and response under c.mu, and an ended call starts nothing.
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		cancel()
		a.ignore()
		return nil, context.Canceled
	}
	a.cancel = cancel
	c.mu.Unlock()
	for k, v := range c.outbound {
		req.Header[k] = v
	}
	req.Header.Set(HeaderTimeout, strconv.FormatInt(max(remaining.Milliseconds(), 1), 10))
	req.ContentLength = int64(len(c.req.Body))

	// The attempt's own timeout covers the wait for the response headers only: once they are
	// here the call is committed to this agent and only the call's deadline applies.
	var timedOut atomic.Bool
	timer := time.AfterFunc(min(s.cfg.AttemptTimeout, remaining), func() { timedOut.Store(true); cancel() })
	var headers chan struct{}
	if c.hedgeDelay() > 0 {
		// A hedged execution cancels the attempts that lost. Without hedging nothing cancels an
		// attempt but the call's context, which actx derives from: no watcher is needed.
		headers = make(chan struct{})
		go func() {
			select {
			case <-exec.Canceled(): // a hedge that lost, or the execution ended
				cancel()
			case <-headers:
			}
		}()
	}
	a.sent = s.now()
	resp, err := s.client.Do(req)
	timer.Stop()
	if headers != nil {
		close(headers)
	}
	a.ttfb = s.now().Sub(a.sent)

	c.mu.Lock()
	ended := c.ended || exec.IsCanceled()
	if !ended && err == nil {
		a.resp = resp // from here end() closes it unless the caller has it
	}
	c.mu.Unlock()
	if ended {
		if resp != nil {
			_ = resp.Body.Close()
		}
		if d := c.hedgeDelay(); d > 0 && a.ttfb >= d {
			// A hedge overtook it: a straggler. Counted against it (its wait as the latency
			// sample, and as a failure towards outlier ejection), so that calls stop going to an
			// agent that hedges keep overtaking; ignoring it would keep it looking healthy and
			// spend the hedging budget on it.
			a.slow()
		} else {
			a.ignore()
		}
		if err == nil {
			err = context.Canceled
		}
		return nil, err
	}
	if err != nil {
		return nil, a.transportFailure(err, timedOut.Load())
	}
	if retryStatus(resp.StatusCode) {
		a.guard.cb.RecordFailure()
		if c.retryable && exec.Attempts() < s.cfg.MaxAttempts {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			_ = resp.Body.Close()
			a.finish(0, errAgentStatus)
			e := errs.New(errs.BadGateway, "the agent answered %d", resp.StatusCode)
			c.mu.Lock()
			c.note(e)
			c.mu.Unlock()
			return nil, &retryableError{e}
		}
		return a, nil // relayed as it is; finish counts it as a failure
	}
	if resp.StatusCode >= 500 {
		a.guard.cb.RecordFailure()
		return a, nil // relayed as it is; finish counts it as a failure
	}
	a.guard.cb.RecordSuccess()
	return a, nil
}

var errAgentStatus = errors.New("agent answered a retryable status")

// retryStatus reports the statuses that say the agent could not serve the call now.
func retryStatus(code int) bool {
	return code == http.StatusBadGateway || code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout
}

// transportFailure classifies an error of the request to the agent.
func (a *attempt) transportFailure(err error, timedOut bool) error {
	c, s := a.c, a.c.s
	if b, ok := egress.IsBlocked(err); ok {
		// Nothing was sent: not the agent's health, and another agent may be fine.
		a.ignore()
		if s.deps.OnBlocked != nil {
			s.deps.OnBlocked(c.ctx, c.req.TenantID, a.agent.ID, b)
		}
		e := errs.Wrap(errs.BadGateway, err, "egress to the agent's endpoint was refused: %s", b.Reason)
		c.mu.Lock()
		c.note(e)
		c.mu.Unlock()
		return &retryableError{e}
	}
	a.guard.cb.RecordFailure()
	a.finish(0, err)
	if c.ctx.Err() != nil {
		return errs.Wrap(errs.GatewayTimeout, err, "no answer from the agent within the call's deadline")
	}
	var e *errs.Error
	if timedOut {
		e = errs.Wrap(errs.GatewayTimeout, err, "the agent did not answer within %s", s.cfg.AttemptTimeout)
	} else {
		e = errs.Wrap(errs.BadGateway, err, "the agent could not be reached: %s", transportReason(err))
	}
	c.mu.Lock()
	c.note(e)
	c.mu.Unlock()
	if c.retryable || neverSent(err) {
		return &retryableError{e}
	}
	return e
}

// neverSent reports whether err happened before any byte of the request left: then repeating
// the call elsewhere is safe even when it is not idempotent.
func neverSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// transportReason names the failure without addresses.
func transportReason(err error) string {
	if r, ok := egress.IsTLSRefused(err); ok {
		return "mTLS handshake refused (" + r.Reason + ")"
	}
	var op *net.OpError
	switch {
	case errors.As(err, &op) && op.Op == "dial":
		return "connection refused or unreachable"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed before an answer"
	default:
		return "transport error"
	}
}

// agentURL is where a capability of an agent is invoked: <endpoint>/invoke/<capability>.
func agentURL(endpoint, capability string) (string, error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return "", err
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/invoke/" + capability
	u.RawPath = ""
	return u.String(), nil
}

// finish ends the attempt's accounting: once, whatever path gets there first.
func (a *attempt) finish(n int64, err error) {
	a.once.Do(func() {
		c, s := a.c, a.c.s
		failure := err != nil || (a.resp != nil && a.resp.StatusCode >= 500)
		if a.bal != nil {
			a.bal.End(balancer.Outcome{Latency: a.ttfb, Failure: failure})
			s.m.inFlight(c.req.TenantID, c.req.Capability, a.agent.ID, -1)
		}
		a.guard.bh.ReleasePermit()
	})
}

// ignore ends the attempt without counting it for or against the agent.
func (a *attempt) ignore() {
	a.once.Do(func() {
		a.guard.releaseProbe()
		if a.bal != nil {
			a.bal.End(balancer.Outcome{Ignore: true})
			a.c.s.m.inFlight(a.c.req.TenantID, a.c.req.Capability, a.agent.ID, -1)
		}
		a.guard.bh.ReleasePermit()
	})
}

// slow ends an attempt that a hedge overtook (see send): for the balancer a failure whose
// latency is its wait; the breaker is not told (the agent did not fail a request).
func (a *attempt) slow() {
	a.once.Do(func() {
		a.guard.releaseProbe()
		if a.bal != nil {
			a.bal.End(balancer.Outcome{Latency: a.ttfb, Failure: true})
			a.c.s.m.inFlight(a.c.req.TenantID, a.c.req.Capability, a.agent.ID, -1)
		}
		a.guard.bh.ReleasePermit()
	})
}

// hedgeDelay is the call's hedging delay, 0 without hedging.
func (c *call) hedgeDelay() time.Duration {
	if c.route == nil || c.route.Hedge == nil || !c.retryable {
		return 0
	}
	return time.Duration(c.route.Hedge.DelayMs) * time.Millisecond
}

// end cleans up every attempt but the winner (whose body the caller has read by now) and the
// call's context.
func (c *call) end() {
	type open struct {
		a      *attempt
		cancel context.CancelFunc
		resp   *http.Response
	}
	c.mu.Lock()
	c.ended = true
	opened := make([]open, len(c.attempts))
	for i, a := range c.attempts {
		opened[i] = open{a, a.cancel, a.resp}
	}
	c.mu.Unlock()
	for _, o := range opened {
		if o.cancel != nil {
			o.cancel()
		}
		if o.resp != nil {
			_ = o.resp.Body.Close()
		}
		o.a.ignore()
	}
	c.cancel()
}

// complete records the call's outcome once: metrics and the OnComplete hook.
func (c *call) complete(status int, respBytes int64, err error) {
	c.mu.Lock()
	if c.done {
		c.mu.Unlock()
		return
	}
	c.done = true
	win := c.winner
	c.mu.Unlock()
	s := c.s
	agentID := ""
	if win != nil {
		agentID = win.agent.ID
	}
	outcome := outcomeOf(status, err, win != nil)
	dur := s.now().Sub(c.started)
	s.m.finished(c.req.TenantID, c.req.Capability, agentID, outcome, dur)
	sink, _ := c.ctx.Value(completionSinkKey{}).(*Completion) // async runs keep theirs (async.go)
	if s.deps.OnComplete == nil && sink == nil {
		return
	}
	comp := Completion{
		InvocationID: c.id, Tenant: c.req.TenantID, Capability: c.req.Capability, AgentID: agentID,
		RequestID: c.req.RequestID, Status: status, Outcome: outcome, Attempts: int(c.nAttempt.Load()),
		RequestBytes: int64(len(c.req.Body)), ResponseBytes: respBytes, StartedAt: c.started,
		Duration: dur, Async: c.req.Async,
	}
	if tp := c.outbound.Get("traceparent"); tp != "" {
		comp.TraceParent = tp
	}
	if e := errs.As(err); e != nil && win == nil {
		comp.Error = e.Message
	}
	if sink != nil {
		*sink = comp
	}
	if s.deps.OnComplete != nil {
		s.deps.OnComplete(context.WithoutCancel(c.ctx), comp)
	}
}

func outcomeOf(status int, err error, answered bool) string {
	switch {
	case !answered && errs.Is(err, errs.GatewayTimeout):
		return OutcomeTimeout
	case !answered && (errs.Is(err, errs.BadGateway)):
		return OutcomeError
	case !answered:
		return OutcomeRejected
	case status >= 500:
		return OutcomeError
	case status >= 400:
		return OutcomeClientError
	default:
		return OutcomeOK
	}
}

// statusOf is the HTTP status an error of the call becomes (for the completion record; the
// problem writer maps it the same way).
func statusOf(err error) int {
	switch errs.CodeOf(err) {
	case errs.Invalid:
		return http.StatusBadRequest
	case errs.NotFound:
		return http.StatusNotFound
	case errs.UnsupportedMediaType:
		return http.StatusUnsupportedMediaType
	case errs.BadGateway:
		return http.StatusBadGateway
	case errs.GatewayTimeout:
		return http.StatusGatewayTimeout
	case errs.Unavailable:
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}
