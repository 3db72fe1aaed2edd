package control

import (
	"context"
	"fmt"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/perimeter"
)

// ActionTenantPerimeterUpdate is the audit action of a change to a tenant's perimeter settings.
// A stable string: auditors filter on it.
const ActionTenantPerimeterUpdate = "tenant.perimeter.update"

// errNoPerimeter is returned when the kernel runs without the perimeter settings service.
func errNoPerimeter() error {
	return errs.New(errs.Unavailable, "tenant perimeter settings are not enabled on this kernel")
}

// PutPerimeter replaces a tenant's perimeter settings (see perimeter.Service.Put; ifMatch is
// optional), recorded in the tenant's tree with resource "tenants/<id>/perimeter". This
// replica's snapshot sees the change as soon as the transaction has committed; other replicas
// within their refresh interval.
func (c *Control) PutPerimeter(ctx context.Context, tenantID string, in perimeter.Input, ifMatch string) (perimeter.Settings, error) {
	if c.Perimeter == nil {
		return perimeter.Settings{}, errNoPerimeter()
	}
	var ch perimeter.Change
	err := c.mutate(ctx, func(ctx context.Context) (outcome, error) {
		var err error
		if ch, err = c.Perimeter.Put(ctx, tenantID, in, ifMatch); err != nil {
			return outcome{}, err
		}
		o := outcome{tenant: tenantID, action: ActionTenantPerimeterUpdate, resource: "tenants/" + tenantID + "/perimeter",
			reason: fmt.Sprintf("allowed: require_signatures=%t, %d gateway origins, version %d",
				ch.After.RequireSignatures, len(ch.After.GatewayOrigins), ch.After.Version)}
		if !ch.Changed {
			o.reason = "allowed: no change"
		}
		return o, nil
	})
	if err != nil {
		return perimeter.Settings{}, err
	}
	if ch.Changed {
		if err := c.Perimeter.Refresh(ctx); err != nil {
			// The change is durable; the periodic refresh picks it up.
			c.opts.Logger.WarnContext(ctx, "refresh perimeter settings after a change", "tenant", tenantID, "error", err)
		}
	}
	return ch.After, nil
}
