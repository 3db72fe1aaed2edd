package control

import (
	"context"
	"time"

	"github.com/nops-kernel/nops/internal/apikey"
	"github.com/nops-kernel/nops/internal/events"
	"github.com/nops-kernel/nops/internal/registry"
	"github.com/nops-kernel/nops/internal/tenant"
)

// Audit actions. Stable strings: auditors filter on them.
const (
	ActionTenantCreate    = "tenant.create"
	ActionTenantSuspend   = "tenant.suspend"
	ActionTenantResume    = "tenant.resume"
	ActionTenantDelete    = "tenant.delete"
	ActionAgentRegister   = "agent.register"
	ActionAgentUpdate     = "agent.update"
	ActionAgentDeregister = "agent.deregister"
	ActionAgentStatus     = "agent.status_change"
	ActionAPIKeyCreate    = "apikey.create"
	ActionAPIKeyRotate    = "apikey.rotate"
	ActionAPIKeyRevoke    = "apikey.revoke"
	// ActionAPIKeyForceRotate records an administrator setting a deadline for rotating a key.
	ActionAPIKeyForceRotate = "apikey.force_rotate"
	ActionAuthenticate      = "auth.authenticate"
	ActionAuthorize         = "auth.authorize"
	ActionLogin             = "auth.login"
	// ActionEgressRefused records an invocation the egress policy kept from an agent's address.
	ActionEgressRefused = "invoke.egress_refused"
	// ActionEgressServiceRefused records a connection of a kernel service other than agent calls
	// (the OTLP exporter) refused by the egress gate, at most once a minute per destination.
	ActionEgressServiceRefused = "egress.refused"
	// ActionEgressAllowlist records a signed egress allow-list read again: loaded (allowed) or
	// refused (denied, with the reason; the loaded list stays).
	ActionEgressAllowlist = "egress.allowlist_load"
)

// CreateTenant creates a tenant; recorded in the global tree.
func (c *Control) CreateTenant(ctx context.Context, in tenant.CreateInput) (tenant.Tenant, error) {
	var t tenant.Tenant
	err := c.mutate(ctx, func(ctx context.Context) (outcome, error) {
		var err error
		if t, err = c.Tenants.Create(ctx, in); err != nil {
			return outcome{}, err
		}
		return outcome{action: ActionTenantCreate, resource: "tenants/" + t.ID, event: events.TenantCreated{Tenant: tenantSnapshot(t)}}, nil
	})
	return t, err
}

// SuspendTenant suspends a tenant: its credentials get 403 and its agents leave routing.
func (c *Control) SuspendTenant(ctx context.Context, id string) (tenant.Tenant, error) {
	return c.setTenantStatus(ctx, id, true)
}

// ResumeTenant resumes a suspended tenant.
func (c *Control) ResumeTenant(ctx context.Context, id string) (tenant.Tenant, error) {
	return c.setTenantStatus(ctx, id, false)
}

func (c *Control) setTenantStatus(ctx context.Context, id string, suspend bool) (tenant.Tenant, error) {
	var tr tenant.Transition
	err := c.mutate(ctx, func(ctx context.Context) (outcome, error) {
		var err error
		action := ActionTenantResume
		if suspend {
			action = ActionTenantSuspend
			tr, err = c.Tenants.Suspend(ctx, id)
		} else {
			tr, err = c.Tenants.Resume(ctx, id)
		}
		if err != nil {
			return outcome{}, err
		}
		o := outcome{action: action, resource: "tenants/" + id}
		if !tr.Changed {
			o.reason = "allowed: no change"
			return o, nil
		}
		if suspend {
			o.event = events.TenantSuspended{Tenant: tenantSnapshot(tr.After)}
		} else {
			o.event = events.TenantResumed{Tenant: tenantSnapshot(tr.After)}
		}
		return o, nil
	})
	return tr.After, err
}

// DeleteTenant deletes a tenant (with its agents when cascade).
func (c *Control) DeleteTenant(ctx context.Context, id string, cascade bool) error {
	return c.mutate(ctx, func(ctx context.Context) (outcome, error) {
		d, err := c.Tenants.Delete(ctx, id, cascade)
		if err != nil {
			return outcome{}, err
		}
		return outcome{action: ActionTenantDelete, resource: "tenants/" + id,
			event: events.TenantDeleted{Tenant: tenantSnapshot(d.Tenant), Cascade: cascade, DeletedAt: c.opts.Now().UTC()}}, nil
	})
}

// RegisterAgent registers an agent in tenantID.
func (c *Control) RegisterAgent(ctx context.Context, tenantID string, in registry.AgentInput) (registry.Agent, error) {
	var a registry.Agent
	err := c.mutate(ctx, func(ctx context.Context) (outcome, error) {
		var err error
		if a, err = c.Agents.Register(ctx, tenantID, in); err != nil {
			return outcome{}, err
		}
		return outcome{tenant: tenantID, action: ActionAgentRegister, resource: "agents/" + a.ID, event: events.AgentRegistered{Agent: agentSnapshot(a)}}, nil
	})
	return a, err
}

// UpdateAgent replaces an agent's registration if ifMatch names its current version.
func (c *Control) UpdateAgent(ctx context.Context, tenantID, id, ifMatch string, in registry.AgentInput) (registry.Agent, error) {
	var ch registry.Change
	err := c.mutate(ctx, func(ctx context.Context) (outcome, error) {
		var err error
		if ch, err = c.Agents.Update(ctx, tenantID, id, ifMatch, in); err != nil {
			return outcome{}, err
		}
		o := outcome{tenant: tenantID, action: ActionAgentUpdate, resource: "agents/" + id}
		if !ch.Changed {
			o.reason = "allowed: no change"
			return o, nil
		}
		o.event = events.AgentUpdated{Agent: agentSnapshot(ch.After)}
		return o, nil
	})
	return ch.After, err
}

// DeregisterAgent deletes an agent; ifMatch may be empty (unconditional) or an ETag.
func (c *Control) DeregisterAgent(ctx context.Context, tenantID, id, ifMatch string) error {
	return c.mutate(ctx, func(ctx context.Context) (outcome, error) {
		a, err := c.Agents.Delete(ctx, tenantID, id, ifMatch)
		if err != nil {
			return outcome{}, err
		}
		return outcome{tenant: tenantID, action: ActionAgentDeregister, resource: "agents/" + id, event: events.AgentDeregistered{Agent: agentSnapshot(a)}}, nil
	})
}

// RollbackAgent deregisters an agent as the kernel's own rollback of an egress violation: the
// audit record (agent.deregister, actor the kernel when ctx has no principal) gives reason, and
// agent.deregistered is published as for any deregistration.
func (c *Control) RollbackAgent(ctx context.Context, tenantID, id, reason string) error {
	return c.mutate(ctx, func(ctx context.Context) (outcome, error) {
		a, err := c.Agents.Delete(ctx, tenantID, id, "")
		if err != nil {
			return outcome{}, err
		}
		return outcome{tenant: tenantID, action: ActionAgentDeregister, resource: "agents/" + id,
			reason: "egress rollback: " + reason, event: events.AgentDeregistered{Agent: agentSnapshot(a)}}, nil
	})
}

// heartbeatIn applies one heartbeat inside the caller's transaction: the registry write and its
// agent.heartbeat event and, when the heartbeat changes the agent's status (stale or zombie back
// to healthy), the agent.status_changed event. It reports that change; the caller audits it as
// the LAST write of its transaction (auditHeartbeat), which keeps the audit tree lock after every
// row lock. A plain heartbeat is liveness telemetry, not a change of configuration or rights, and
// is not audited: auditing every one would put the audit tree lock on every agent's hot path.
func (c *Control) heartbeatIn(ctx context.Context, tenantID, id string, in registry.HeartbeatInput) (registry.HeartbeatResult, bool, error) {
	res, err := c.Agents.Heartbeat(ctx, tenantID, id, in)
	if err != nil {
		return res, false, err
	}
	at := res.At
	if err := c.enqueue(ctx, events.AgentHeartbeat{AgentID: id, Tenant: tenantID, HeartbeatAt: at, Load: loadSnapshot(res.Load)}); err != nil {
		return res, false, err
	}
	if res.Previous == res.Current || res.Previous == "" {
		return res, false, nil
	}
	if err := c.enqueue(ctx, events.AgentStatusChanged{AgentID: id, Tenant: tenantID, From: string(res.Previous), To: string(res.Current), HeartbeatAt: &at, ChangedAt: at}); err != nil {
		return res, false, err
	}
	return res, true, nil
}

// auditHeartbeat records the status change a heartbeat caused.
func (c *Control) auditHeartbeat(ctx context.Context, res registry.HeartbeatResult) error {
	return c.appendOnly(ctx, res.TenantID, ActionAgentStatus, "agents/"+res.AgentID, "heartbeat: "+string(res.Previous)+" → "+string(res.Current))
}

// Sweep applies the status changes that heartbeat ages imply (healthy → stale → zombie), each
// with its event and audit record, at most limit at a time. The kernel runs it periodically.
func (c *Control) Sweep(ctx context.Context, limit int) ([]registry.StatusChange, error) {
	var changes []registry.StatusChange
	err := c.store.InTx(ctx, func(ctx context.Context) error {
		var err error
		if changes, err = c.Agents.Sweep(ctx, limit); err != nil {
			return err
		}
		for _, ch := range changes {
			hb := ch.HeartbeatAt
			if err := c.enqueue(ctx, events.AgentStatusChanged{AgentID: ch.AgentID, Tenant: ch.TenantID, From: string(ch.From), To: string(ch.To), HeartbeatAt: &hb, ChangedAt: ch.At}); err != nil {
				return err
			}
			if err := c.appendOnly(ctx, ch.TenantID, ActionAgentStatus, "agents/"+ch.AgentID, "heartbeat age: "+string(ch.From)+" → "+string(ch.To)); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil && len(changes) > 0 {
		c.opts.Enqueued()
		for _, ch := range changes {
			c.notifyTree(ctx, ch.TenantID)
			c.opts.OnStatusChange(ch.TenantID, ch.AgentID, ch.To)
		}
	}
	return changes, err
}

// CreateAPIKey creates a key; the raw key is returned once.
func (c *Control) CreateAPIKey(ctx context.Context, in apikey.CreateInput) (apikey.Key, string, error) {
	var (
		k   apikey.Key
		raw string
	)
	err := c.mutate(ctx, func(ctx context.Context) (outcome, error) {
		var err error
		if k, raw, err = c.Keys.Create(ctx, in); err != nil {
			return outcome{}, err
		}
		return outcome{tenant: k.TenantID, action: ActionAPIKeyCreate, resource: "api-keys/" + k.ID, event: events.APIKeyCreated{Key: keySnapshot(k)}}, nil
	})
	return k, raw, err
}

// RotateAPIKey issues a new secret; the old one works for grace.
func (c *Control) RotateAPIKey(ctx context.Context, id string, grace time.Duration) (apikey.Key, string, error) {
	var (
		k   apikey.Key
		raw string
	)
	err := c.mutate(ctx, func(ctx context.Context) (outcome, error) {
		var err error
		if k, raw, err = c.Keys.Rotate(ctx, id, grace); err != nil {
			return outcome{}, err
		}
		now := c.opts.Now().UTC()
		until := k.PrevValidUntil
		// The key service reads its own clock, a moment earlier: a grace shorter than that moment
		// has ended by now, and the event says so rather than a grace ending before the rotation.
		if until.Before(now) {
			until = now
		}
		return outcome{tenant: k.TenantID, action: ActionAPIKeyRotate, resource: "api-keys/" + id,
			event: events.APIKeyRotated{Key: keySnapshot(k), RotatedAt: now, GraceUntil: until}}, nil
	})
	return k, raw, err
}

// ForceRotateAPIKey requires key id to be rotated within deadline (apikey.Service.RequireRotation).
func (c *Control) ForceRotateAPIKey(ctx context.Context, id string, deadline time.Duration) (apikey.Key, error) {
	var k apikey.Key
	err := c.mutate(ctx, func(ctx context.Context) (outcome, error) {
		var err error
		if k, err = c.Keys.RequireRotation(ctx, id, deadline); err != nil {
			return outcome{}, err
		}
		return outcome{tenant: k.TenantID, action: ActionAPIKeyForceRotate, resource: "api-keys/" + id,
			reason: "rotate by " + k.RotateBy.Format(time.RFC3339),
			event:  events.APIKeyRotationRequired{Key: keySnapshot(k), RequiredAt: c.opts.Now().UTC(), RotateBy: k.RotateBy}}, nil
	})
	return k, err
}

// RevokeAPIKey revokes a key at once.
func (c *Control) RevokeAPIKey(ctx context.Context, id string) error {
	return c.mutate(ctx, func(ctx context.Context) (outcome, error) {
		k, err := c.Keys.Revoke(ctx, id)
		if err != nil {
			return outcome{}, err
		}
		return outcome{tenant: k.TenantID, action: ActionAPIKeyRevoke, resource: "api-keys/" + id, event: events.APIKeyRevoked{Key: keySnapshot(k)}}, nil
	})
}
