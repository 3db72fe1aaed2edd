package registry

import (
	"context"
	"time"

	"github.com/nops-kernel/nops/internal/tenant"
)

// ListQuery selects a page of one tenant's agents for Store.ListAgents.
type ListQuery struct {
	Capability string  // "" for any; else only agents offering a capability of exactly this name
	After      *Cursor // nil for the start; else only agents strictly after it in (CreatedAt, ID)
	Limit      int     // at most this many agents
}

// Candidate is an agent offered for routing together with its tenant's status, read in the same
// query so the routing rule sees a consistent pair.
type Candidate struct {
	Agent        Agent
	TenantStatus tenant.Status
}

// Store persists agents. Every method works inside whatever transaction the adapter bound to ctx;
// none opens its own or keeps state between calls. Every method that touches one agent is keyed by
// (tenantID, id): another tenant's agent is errs.NotFound. Times passed in are UTC with
// microsecond precision and must round-trip exactly (SetAgentStatus compares them).
type Store interface {
	// CreateAgent inserts a with every field. A name taken in the tenant is an errs.Conflict; an
	// unknown tenant is an errs.NotFound.
	CreateAgent(ctx context.Context, a Agent) error
	// AgentByID returns the agent, or an errs.NotFound.
	AgentByID(ctx context.Context, tenantID, id string) (Agent, error)
	// ListAgents returns up to q.Limit agents of the tenant matching q, ordered by (CreatedAt, ID).
	ListAgents(ctx context.Context, tenantID string, q ListQuery) ([]Agent, error)
	// UpdateAgent writes the registration fields of a (Name, Version, Capabilities, Endpoint,
	// Labels, Metadata, Criticality), UpdatedAt and Revision where the stored revision is
	// prevRevision; it leaves Status, HeartbeatAt and Load alone. It returns an errs.NotFound when
	// the agent is gone, an errs.Conflict wrapping ErrPreconditionFailed when the revision
	// differs, and an errs.Conflict for a name taken in the tenant.
	UpdateAgent(ctx context.Context, a Agent, prevRevision int64) error
	// DeleteAgent deletes the agent where the stored revision is revision. It returns an
	// errs.NotFound when the agent is gone and an errs.Conflict wrapping ErrPreconditionFailed
	// when the revision differs.
	DeleteAgent(ctx context.Context, tenantID, id string, revision int64) error
	// Heartbeat sets HeartbeatAt to at, Load to load and Status to StatusHealthy, and returns the
	// status stored before, or an errs.NotFound. It touches nothing else (not UpdatedAt, not
	// Revision), so an adapter can make it one narrow UPDATE (PostgreSQL can return the old status
	// from a self-join; SQLite can read it first in the same transaction).
	Heartbeat(ctx context.Context, tenantID, id string, at time.Time, load Load) (Status, error)
	// SetAgentStatus stores c.To as the agent's status if its stored status is still c.From and
	// its HeartbeatAt still c.HeartbeatAt, and reports whether it did. A missing agent is not an
	// error: it reports false.
	SetAgentStatus(ctx context.Context, c StatusChange) (bool, error)
	// SweepCandidates returns up to limit agents, of every tenant, whose stored status differs
	// from the one their heartbeat age implies, where staleAt = now - TTLs.Stale and
	// zombieAt = now - TTLs.Zombie:
	//
	//	(heartbeat_at >  staleAt                          AND status <> 'healthy') OR
	//	(heartbeat_at <= staleAt AND heartbeat_at > zombieAt AND status <> 'stale') OR
	//	(heartbeat_at <= zombieAt                         AND status <> 'zombie')
	//
	// Extra rows are harmless (Sweep re-derives); missing rows delay an event to a later sweep.
	SweepCandidates(ctx context.Context, staleAt, zombieAt time.Time, limit int) ([]Agent, error)
	// RoutingCandidates is the one query routing needs: up to limit agents of the tenant that
	// offer the capability and whose HeartbeatAt is after heartbeatAfter, each with the status of
	// the tenant (a join), in any order. The Service applies Routable to the result.
	RoutingCandidates(ctx context.Context, tenantID, capability string, heartbeatAfter time.Time, limit int) ([]Candidate, error)
}
