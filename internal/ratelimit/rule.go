package ratelimit

import (
	"fmt"
	"math"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
)

// Bounds of a rule.
const (
	MinPeriod = time.Second
	MaxPeriod = 24 * time.Hour
	// MaxLimit and MaxBurst keep the emission interval at 1 µs or more for the shortest period,
	// and every GCRA time below 2^53 µs, which Lua's doubles in Redis hold exactly.
	MaxLimit = 1_000_000
	MaxBurst = 1_000_000
)

// Rule allows Limit requests per Period and Burst more at once on top of them: from a full
// bucket, Limit+Burst requests pass back to back, after which one more passes every
// Period/Limit. A Limit of 0 means the rule does not apply (unlimited).
type Rule struct {
	Name   string
	Limit  int
	Period time.Duration
	Burst  int
}

// Enabled reports whether the rule limits anything.
func (r Rule) Enabled() bool { return r.Limit > 0 }

// String renders the rule for audit reasons and logs: "100/1m0s", "100/1m0s+20" with a burst,
// "unlimited" when off.
func (r Rule) String() string {
	if !r.Enabled() {
		return "unlimited"
	}
	if r.Burst > 0 {
		return fmt.Sprintf("%d/%s+%d", r.Limit, r.Period, r.Burst)
	}
	return fmt.Sprintf("%d/%s", r.Limit, r.Period)
}

// Validate checks the bounds; errors are errs.Field naming prefix + "limit", "period" or
// "burst" (prefix "" or ending in '.').
func (r Rule) Validate(prefix string) error {
	switch {
	case r.Limit < 0 || r.Limit > MaxLimit:
		return errs.Field(prefix+"limit", fmt.Sprintf("must be between 0 (unlimited) and %d", MaxLimit))
	case r.Burst < 0 || r.Burst > MaxBurst:
		return errs.Field(prefix+"burst", fmt.Sprintf("must be between 0 and %d", MaxBurst))
	case r.Limit == 0 && r.Burst != 0:
		return errs.Field(prefix+"burst", "must be 0 when the limit is 0 (unlimited)")
	case r.Limit == 0 && r.Period == 0:
		return nil
	case r.Period < MinPeriod || r.Period > MaxPeriod:
		return errs.Field(prefix+"period", fmt.Sprintf("must be between %s and %s", MinPeriod, MaxPeriod))
	case r.Period%time.Millisecond != 0:
		return errs.Field(prefix+"period", "must be a whole number of milliseconds")
	}
	return nil
}

// interval is the GCRA emission interval T = Period/Limit in µs (at least 1).
func (r Rule) interval() int64 {
	return max(r.Period.Microseconds()/int64(r.Limit), 1)
}

// tolerance is the GCRA delay tolerance τ = T·(Limit+Burst−1) in µs: how far ahead of now the
// theoretical arrival time may run while a request still passes.
func (r Rule) tolerance() int64 {
	return r.interval() * int64(r.Limit+r.Burst-1)
}

// Decision is the outcome of a check: for an allowed request the rule with the least quota left,
// for a refused one the rule that refused.
type Decision struct {
	Allowed bool
	// Limit and Period are the reported rule's quota and window (RateLimit-Policy q and w),
	// Remaining the requests it still lets through now (RateLimit r).
	Limit, Remaining int
	Period           time.Duration
	// Reset is the time until the reported rule's quota is whole again (RateLimit t when
	// allowed); RetryAfter, for a refusal, the time until one request passes.
	Reset, RetryAfter time.Duration
	Rule              string // the reported rule's name; "" when no rule applied
	Key               string // the counter the rule keeps for this request, e.g. "ip:203.0.113.7"
	// Degraded tells that the shared store (Redis) failed and this replica decided alone.
	Degraded bool
}

// Refusal returns nil for an allowed decision, and for a refused one the errs.RateLimited error
// the API answers with 429, Retry-After in whole seconds rounded up.
func (d Decision) Refusal() error {
	if d.Allowed {
		return nil
	}
	return &errs.Error{Code: errs.RateLimited, Message: "rate limit exceeded", RetryAfter: ceilSecond(d.RetryAfter)}
}

// ceilSecond rounds d up to whole seconds, at least one: clients must not retry at once.
func ceilSecond(d time.Duration) time.Duration {
	return time.Duration(max(int64(math.Ceil(d.Seconds())), 1)) * time.Second
}

// Cell is one counter a check takes a request from.
type Cell struct {
	Key  string
	Rule Rule
}

// gcra applies one request to the theoretical arrival time tat (µs since the Unix epoch; 0 or
// anything before now: a full bucket) at now. It reports whether the request conforms, the TAT to
// store if it is taken, and the time until the quota is whole (u) and, when refused, until one
// request passes (retry), both in µs.
func gcra(r Rule, tat, now int64) (ok bool, newTAT, u, retry int64) {
	tat = max(tat, now)
	diff := tat - now
	if tau := r.tolerance(); diff > tau {
		return false, tat, diff, diff - tau
	}
	newTAT = tat + r.interval()
	return true, newTAT, newTAT - now, 0
}

// decision builds the Decision of one cell from gcra's µs results. For a request that conformed
// but was not taken (another cell refused), u is the untouched TAT's distance from now.
func decision(c Cell, ok bool, u, retry int64) Decision {
	t, tau := c.Rule.interval(), c.Rule.tolerance()
	remaining := 0
	if ok {
		remaining = int(max((tau+t-u)/t, 0))
	}
	return Decision{
		Allowed: ok, Limit: c.Rule.Limit, Remaining: remaining, Period: c.Rule.Period,
		Reset: time.Duration(u) * time.Microsecond, RetryAfter: time.Duration(retry) * time.Microsecond,
		Rule: c.Rule.Name, Key: c.Key,
	}
}
