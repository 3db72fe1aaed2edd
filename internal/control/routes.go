package control

import (
	"context"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/events"
	"github.com/nops-kernel/nops/internal/routing"
)

// Audit actions of routing tables. Stable strings: auditors filter on them.
const (
	ActionRouteCreate = "route.create"
	ActionRouteUpdate = "route.update"
	ActionRouteDelete = "route.delete"
)

// errNoRoutes is returned when the kernel runs without a routing service.
func errNoRoutes() error {
	return errs.New(errs.Unavailable, "routing tables are not enabled on this kernel")
}

// routeResource names a route in audit records.
func routeResource(capability string) string { return "routes/" + capability }

// PutRoute creates or replaces the tenant's route of capability, with its nops.route.updated.v1
// event and audit record (route.create or route.update; an unchanged route is audited as "no
// change" without an event). This replica's cache sees it as soon as the transaction commits;
// other replicas within their cache TTL.
func (c *Control) PutRoute(ctx context.Context, tenantID, capability string, pre routing.Preconditions, spec routing.Spec) (routing.Change, error) {
	if c.Routes == nil {
		return routing.Change{}, errNoRoutes()
	}
	var ch routing.Change
	err := c.mutate(ctx, func(ctx context.Context) (outcome, error) {
		var err error
		if ch, err = c.Routes.Put(ctx, tenantID, capability, pre, spec); err != nil {
			return outcome{}, err
		}
		o := outcome{tenant: tenantID, action: ActionRouteUpdate, resource: routeResource(capability)}
		if ch.Created {
			o.action = ActionRouteCreate
		}
		if !ch.Changed {
			o.reason = "allowed: no change"
			return o, nil
		}
		o.event = events.RouteUpdated{Route: routeSnapshot(ch.After)}
		return o, nil
	})
	if err != nil {
		return routing.Change{}, err
	}
	if ch.Changed {
		c.Routes.Invalidate(tenantID, capability)
	}
	return ch, nil
}

// DeleteRoute deletes the tenant's route of capability (its calls go to every routable agent
// again), with its nops.route.deleted.v1 event and audit record; ifMatch may be empty
// (unconditional) or an ETag.
func (c *Control) DeleteRoute(ctx context.Context, tenantID, capability, ifMatch string) error {
	if c.Routes == nil {
		return errNoRoutes()
	}
	err := c.mutate(ctx, func(ctx context.Context) (outcome, error) {
		r, err := c.Routes.Delete(ctx, tenantID, capability, ifMatch)
		if err != nil {
			return outcome{}, err
		}
		return outcome{tenant: tenantID, action: ActionRouteDelete, resource: routeResource(capability),
			event: events.RouteDeleted{Route: routeSnapshot(r), DeletedAt: c.opts.Now().UTC()}}, nil
	})
	if err != nil {
		return err
	}
	c.Routes.Invalidate(tenantID, capability)
	return nil
}

func routeSnapshot(r routing.Route) events.RouteSnapshot {
	s := events.RouteSnapshot{
		Tenant: r.TenantID, Capability: r.Capability, Targets: make([]events.RouteTarget, 0, len(r.Targets)),
		StickyHeader: r.StickyHeader, TimeoutMs: r.TimeoutMs, Retryable: r.Retryable,
		Revision: r.Revision, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt,
	}
	for _, t := range r.Targets {
		s.Targets = append(s.Targets, events.RouteTarget{AgentID: t.AgentID, Version: t.Version, Weight: t.Weight, Priority: t.Priority})
	}
	if r.Hedge != nil {
		s.Hedge = &events.RouteHedge{DelayMs: r.Hedge.DelayMs, MaxExtra: r.Hedge.MaxExtra}
	}
	return s
}
