package control

import (
	"context"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/policy"
)

// Audit actions of ABAC policies. Stable strings: auditors filter on them.
const (
	ActionPolicyCreate = "policy.create"
	ActionPolicyUpdate = "policy.update"
	ActionPolicyDelete = "policy.delete"
)

// errNoPolicies is returned when the kernel runs without a policy service.
func errNoPolicies() error {
	return errs.New(errs.Unavailable, "ABAC policies are not enabled on this kernel")
}

// CreatePolicy stores a policy; recorded in its tenant's tree, or the global tree for a global
// policy. This replica's engine sees it as soon as the transaction commits; others within their
// refresh interval.
func (c *Control) CreatePolicy(ctx context.Context, in policy.CreateInput) (policy.Policy, error) {
	if c.Policies == nil {
		return policy.Policy{}, errNoPolicies()
	}
	var p policy.Policy
	err := c.mutate(ctx, func(ctx context.Context) (outcome, error) {
		var err error
		if p, err = c.Policies.Create(ctx, in); err != nil {
			return outcome{}, err
		}
		return outcome{tenant: p.TenantID, action: ActionPolicyCreate, resource: "policies/" + p.ID}, nil
	})
	if err != nil {
		return policy.Policy{}, err
	}
	c.Policies.Refresh(ctx)
	return p, nil
}

// UpdatePolicy replaces a policy if ifMatch names its current version.
func (c *Control) UpdatePolicy(ctx context.Context, id, ifMatch string, spec policy.Spec) (policy.Policy, error) {
	if c.Policies == nil {
		return policy.Policy{}, errNoPolicies()
	}
	var ch policy.Change
	err := c.mutate(ctx, func(ctx context.Context) (outcome, error) {
		var err error
		if ch, err = c.Policies.Update(ctx, id, ifMatch, spec); err != nil {
			return outcome{}, err
		}
		o := outcome{tenant: ch.After.TenantID, action: ActionPolicyUpdate, resource: "policies/" + id}
		if !ch.Changed {
			o.reason = "allowed: no change"
		}
		return o, nil
	})
	if err != nil {
		return policy.Policy{}, err
	}
	if ch.Changed {
		c.Policies.Refresh(ctx)
	}
	return ch.After, nil
}

// DeletePolicy deletes a policy; ifMatch may be empty (unconditional) or an ETag.
func (c *Control) DeletePolicy(ctx context.Context, id, ifMatch string) error {
	if c.Policies == nil {
		return errNoPolicies()
	}
	err := c.mutate(ctx, func(ctx context.Context) (outcome, error) {
		p, err := c.Policies.Delete(ctx, id, ifMatch)
		if err != nil {
			return outcome{}, err
		}
		return outcome{tenant: p.TenantID, action: ActionPolicyDelete, resource: "policies/" + id}, nil
	})
	if err != nil {
		return err
	}
	c.Policies.Refresh(ctx)
	return nil
}
