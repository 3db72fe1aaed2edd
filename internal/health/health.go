// Package health runs the kernel's readiness checks: one probe per dependency (database, event
// bus, Redis), run in parallel, each bounded by a timeout, with the round's result cached briefly
// so that readiness probes from load balancers and orchestrators cannot overload the
// dependencies they check.
//
// Only internal/kernel and internal/httpapi import health.
//
// Secrets: a probe's error may name hosts, users or worse. Clients only ever see a short
// classification ("timeout" or "unavailable"); the raw error is logged, at warn, when a check goes
// down, and an info line is logged when it comes back. Logging happens on transitions only, not
// on every round.
//
// Concurrency: a Checker is safe for concurrent use. Concurrent callers share one in-flight
// round; the round runs on a context detached from the callers' cancellation, so a caller going
// away neither aborts the probes nor spoils the cached result for the others.
package health

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"
)

// Defaults for a zero Options.
const (
	DefaultTTL     = time.Second
	DefaultTimeout = 2 * time.Second
)

// The classifications a Result's Error holds.
const (
	ReasonTimeout     = "timeout"
	ReasonUnavailable = "unavailable"
)

// errStillRunning is logged when a check's previous probe has not returned yet.
var errStillRunning = errors.New("previous probe has not returned yet")

// Check is one dependency's readiness probe. Probe must honour ctx's deadline; one that does not
// is reported as timed out all the same, and is not started again until it returns.
type Check struct {
	Name  string
	Probe func(ctx context.Context) error
}

// Options tunes a Checker. The zero value works.
type Options struct {
	// TTL is how long a round's result is served before probes run again. Default 1 s.
	TTL time.Duration
	// Timeout bounds each probe. Default 2 s.
	Timeout time.Duration
	// Logger receives transitions. Default: discard.
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Result is one check's outcome in a round.
type Result struct {
	Name string
	Up   bool
	// Latency is how long the probe took: at most Timeout, and 0 when its previous probe had
	// not returned yet (so none was started).
	Latency time.Duration
	// Error is "" when Up, else ReasonTimeout or ReasonUnavailable: safe to show to clients.
	Error     string
	CheckedAt time.Time
}

// Report is a round's outcome: Ready when every check is up. Checks are in the order given to
// New.
type Report struct {
	Ready  bool
	Checks []Result
}

// Checker runs the checks and caches their outcome.
type Checker struct {
	checks  []check
	ttl     time.Duration
	timeout time.Duration
	log     *slog.Logger
	now     func() time.Time
	rounds  singleflight.Group

	mu      sync.Mutex // guards the fields below
	last    Report
	expires time.Time // last is fresh while now is before expires; zero before the first round
	down    []bool    // per check, whether the last round found it down (for transition logs)
	seen    bool      // whether a round has completed
}

type check struct {
	Check
	// running is set while a probe goroutine is alive; a probe that ignores its deadline is not
	// started again on top of itself.
	running atomic.Bool
}

// New returns a Checker for checks. It panics when a check has no name, a duplicate name or no
// probe: those are wiring mistakes in the composition root.
func New(checks []Check, opts Options) *Checker {
	c := &Checker{
		ttl:     opts.TTL,
		timeout: opts.Timeout,
		log:     opts.Logger,
		now:     opts.Now,
		checks:  make([]check, len(checks)),
		down:    make([]bool, len(checks)),
	}
	if c.ttl <= 0 {
		c.ttl = DefaultTTL
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	names := make(map[string]bool, len(checks))
	for i, ch := range checks {
		switch {
		case ch.Name == "":
			panic(fmt.Sprintf("health: check %d has no name", i))
		case names[ch.Name]:
			panic(fmt.Sprintf("health: duplicate check %q", ch.Name))
		case ch.Probe == nil:
			panic(fmt.Sprintf("health: check %q has no probe", ch.Name))
		}
		names[ch.Name] = true
		c.checks[i].Check = ch
	}
	return c
}

// Check returns the cached report while it is fresh, and otherwise runs a round (or joins the one
// in flight). It returns within about Timeout even if probes hang, and it does not return early
// when ctx is cancelled: the round is bounded anyway and its result serves the next callers.
// ctx's values (trace, request id) reach the probes; its cancellation does not.
func (c *Checker) Check(ctx context.Context) Report {
	if r, ok := c.fresh(); ok {
		return r
	}
	v, _, _ := c.rounds.Do("round", func() (any, error) {
		// A round may have completed between fresh() above and this call.
		if r, ok := c.fresh(); ok {
			return r, nil
		}
		return c.round(context.WithoutCancel(ctx)), nil
	})
	r := v.(Report)
	r.Checks = slices.Clone(r.Checks) // callers own their copy
	return r
}

func (c *Checker) fresh() (Report, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.seen || !c.now().Before(c.expires) {
		return Report{}, false
	}
	r := c.last
	r.Checks = slices.Clone(r.Checks)
	return r, true
}

// round probes every check in parallel, caches the report and logs transitions.
func (c *Checker) round(ctx context.Context) Report {
	results := make([]Result, len(c.checks))
	raw := make([]error, len(c.checks))
	var wg sync.WaitGroup
	for i := range c.checks {
		wg.Go(func() { results[i], raw[i] = c.probe(ctx, &c.checks[i]) })
	}
	wg.Wait()

	report := Report{Ready: true, Checks: results}
	for _, r := range results {
		report.Ready = report.Ready && r.Up
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	for i, r := range results {
		switch {
		case !r.Up && !c.down[i]:
			c.log.Warn("readiness check down", "check", r.Name, "reason", r.Error, "latency", r.Latency, "error", raw[i].Error())
		case r.Up && c.down[i]:
			c.log.Info("readiness check up", "check", r.Name, "latency", r.Latency)
		}
		c.down[i] = !r.Up
	}
	c.last, c.seen = report, true
	c.expires = c.now().Add(c.ttl)
	return report
}

// probe runs one check with its own timeout. It returns the client-safe result and the raw error
// for the log.
func (c *Checker) probe(ctx context.Context, ch *check) (Result, error) {
	start := c.now()
	res := Result{Name: ch.Name, CheckedAt: start}
	if !ch.running.CompareAndSwap(false, true) {
		res.Error = ReasonTimeout
		return res, errStillRunning
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	done := make(chan error, 1) // buffered: a probe outliving its timeout must not block
	go func() {
		defer ch.running.Store(false)
		defer func() {
			if p := recover(); p != nil {
				done <- fmt.Errorf("probe panicked: %v", p)
			}
		}()
		done <- ch.Probe(ctx)
	}()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	res.Latency = c.now().Sub(start)
	if err == nil {
		res.Up = true
		return res, nil
	}
	res.Error = classify(ctx, err)
	return res, err
}

// classify maps a probe error to what clients may see.
func classify(ctx context.Context, err error) string {
	var ne net.Error
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded),
		errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return ReasonTimeout
	default:
		return ReasonUnavailable
	}
}
