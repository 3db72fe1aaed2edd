package control

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nops-kernel/nops/internal/chaos"
	"github.com/nops-kernel/nops/internal/errs"
)

// ActionChaosUpdate is the audit action of a change of the chaos rules (docs/chaos.md).
const ActionChaosUpdate = "chaos.update"

// ChaosRules returns this replica's chaos rules and whether the configuration allows them
// (chaos.enabled).
func (c *Control) ChaosRules(context.Context) (rules []chaos.Rule, enabled bool) {
	return c.Chaos.Rules(), c.Chaos.Enabled()
}

// SetChaos replaces this replica's chaos rules, recorded in the global tree with resource "chaos"
// (the rules are in the reason). A configuration with chaos.enabled off answers errs.Conflict;
// an invalid rule errs.Invalid naming "rules.<i>.<field>". The change's own transaction is exempt
// from the database faults (chaos.Exempt), so rules failing every write can still be lifted.
func (c *Control) SetChaos(ctx context.Context, rules []chaos.Rule) error {
	if !c.Chaos.Enabled() {
		return errs.New(errs.Conflict, "%s", chaos.ErrDisabled)
	}
	if err := chaos.Validate(rules); err != nil {
		var fe *chaos.FieldError
		if errors.As(err, &fe) {
			return errs.Field(fe.Field, fe.Reason)
		}
		return err
	}
	ctx = chaos.Exempt(ctx)
	return c.mutate(ctx, func(ctx context.Context) (outcome, error) {
		// Set inside the transaction: a failed audit append leaves the old rules.
		if err := c.Chaos.Set(rules); err != nil {
			return outcome{}, err
		}
		return outcome{action: ActionChaosUpdate, resource: "chaos", reason: truncateUTF8("allowed: "+describeRules(rules), maxActionReason)}, nil
	})
}

// describeRules is the audit reason's account of rules.
func describeRules(rules []chaos.Rule) string {
	if len(rules) == 0 {
		return "no faults"
	}
	parts := make([]string, 0, len(rules))
	for _, r := range rules {
		p := fmt.Sprintf("%s error %g%%", r.Target, r.ErrorPercent)
		if r.Latency > 0 {
			p += fmt.Sprintf(", latency %s %g%%", r.Latency, r.LatencyPercent)
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, "; ")
}
