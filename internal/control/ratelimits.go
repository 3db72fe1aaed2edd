package control

import (
	"context"
	"fmt"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/ratelimit"
)

// Audit actions of rate limiting. Stable strings: auditors filter on them.
const (
	ActionRateLimitOverridePut    = "ratelimit.override.put"
	ActionRateLimitOverrideDelete = "ratelimit.override.delete"
	// ActionRateLimitBlock records refused requests, aggregated: at most one record per limiter
	// key and window (see internal/ratelimit).
	ActionRateLimitBlock = "ratelimit.block"
)

// errNoRateLimits answers the override use cases of a kernel without managed overrides.
func errNoRateLimits() error { return errs.New(errs.NotFound, "rate limit overrides are not enabled") }

// PutRateLimitOverride creates the override of in's kind and target, or replaces its limit,
// period and burst; recorded in the global tree. The limiter's cache is refreshed once the change
// has committed (other replicas follow within their refresh interval).
func (c *Control) PutRateLimitOverride(ctx context.Context, in ratelimit.OverrideInput) (ratelimit.Override, error) {
	if c.RateLimits == nil {
		return ratelimit.Override{}, errNoRateLimits()
	}
	var o ratelimit.Override
	err := c.mutate(ctx, func(ctx context.Context) (outcome, error) {
		var err error
		if o, err = c.RateLimits.Put(ctx, in); err != nil {
			return outcome{}, err
		}
		return outcome{action: ActionRateLimitOverridePut, resource: "rate-limits/" + o.ID,
			reason: fmt.Sprintf("allowed: %s %s set to %s", o.Kind, o.Target, o.Rule())}, nil
	})
	if err != nil {
		return ratelimit.Override{}, err
	}
	c.refreshRateLimits(ctx)
	return o, nil
}

// DeleteRateLimitOverride deletes an override; recorded in the global tree. An unknown ID is an
// errs.NotFound.
func (c *Control) DeleteRateLimitOverride(ctx context.Context, id string) error {
	if c.RateLimits == nil {
		return errNoRateLimits()
	}
	err := c.mutate(ctx, func(ctx context.Context) (outcome, error) {
		o, err := c.RateLimits.Delete(ctx, id)
		if err != nil {
			return outcome{}, err
		}
		return outcome{action: ActionRateLimitOverrideDelete, resource: "rate-limits/" + id,
			reason: fmt.Sprintf("allowed: %s %s was %s", o.Kind, o.Target, o.Rule())}, nil
	})
	if err != nil {
		return err
	}
	c.refreshRateLimits(ctx)
	return nil
}

// refreshRateLimits reloads the override cache after a committed change. A failure is only
// logged: the change is durable, and the periodic refresh picks it up.
func (c *Control) refreshRateLimits(ctx context.Context) {
	if err := c.RateLimits.Refresh(ctx); err != nil {
		c.opts.Logger.WarnContext(ctx, "refresh rate limit overrides after a change", "error", err)
	}
}

var _ ratelimit.Recorder = (*Control)(nil)

// RecordBlock implements ratelimit.Recorder: a denied ratelimit.block record in tenant's tree
// ("" the global one) whose resource is "rate-limit-keys/" + the limiter key. The rate limiter
// calls it from its auditor goroutine, at most once per key and window, with a context carrying
// the first blocked request's values. A failure is logged, not returned: the request it
// describes has long been answered.
func (c *Control) RecordBlock(ctx context.Context, tenantID, key, rule, reason string) {
	if err := c.Deny(ctx, tenantID, ActionRateLimitBlock, "rate-limit-keys/"+key, reason); err != nil {
		c.opts.Logger.WarnContext(ctx, "audit rate limit block", "key", key, "rule", rule, "error", err)
	}
}
