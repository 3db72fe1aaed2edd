// The agent registry (registry.Store), tables agents and agent_capabilities of migration 00004.
//
// Capabilities, labels, metadata and load are JSON as encoding/json writes them; nil collections
// are stored empty and read back empty (non-nil), as registry.AgentInput.Normalize makes them.
// agent_capabilities mirrors the names in capabilities, so that ListAgents and RoutingCandidates
// filter by capability in SQL; CreateAgent and UpdateAgent write both in one transaction (InTx,
// which joins the caller's or makes one for the call), and deleting an agent deletes its rows by
// foreign key.
//
// Heartbeat is one statement: an UPDATE joined to a FOR NO KEY UPDATE subselect of the same row,
// which locks the row before reading its status (re-reading the latest version if a concurrent
// write got there first), so RETURNING reports the status the UPDATE replaced. NO KEY UPDATE is the
// lock the UPDATE takes anyway; unlike FOR UPDATE it lets foreign key checks of rows referencing
// the agent (capabilities, API keys) proceed. It costs one primary-key
// lookup, a row lock and a new row version; heartbeat_at, status and load are in no index and the
// table leaves free space on each page (fillfactor 80), so the new version is a HOT update that
// writes no index entry.

package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/registry"
	"github.com/nops-kernel/nops/internal/tenant"
)

var _ registry.Store = (*Store)(nil)

// agentColumns are the columns scanAgent reads, of agents aliased a.
const agentColumns = `a.id, a.tenant_id, a.name, a.version, a.capabilities, a.endpoint, a.labels, a.metadata,
	a.criticality, a.status, a.heartbeat_at, a.load, a.created_at, a.updated_at, a.revision`

// insertAgentCapabilities fills agent_capabilities from the agent's row, given the names, tenant
// and agent. DISTINCT keeps a repeated name from failing the primary key.
const insertAgentCapabilities = `INSERT INTO agent_capabilities (tenant_id, agent_id, name, agent_created_at)
	SELECT DISTINCT a.tenant_id, a.id, n.name, a.created_at FROM agents a, unnest($1::text[]) AS n(name)
	WHERE a.tenant_id = $2 AND a.id = $3`

// CreateAgent inserts a. A taken ID, or a name taken in the tenant, is an errs.Conflict; an
// unknown tenant is an errs.NotFound.
func (s *Store) CreateAgent(ctx context.Context, a registry.Agent) error {
	enc, err := encodeAgent(a)
	if err != nil {
		return fmt.Errorf("create agent %s: %w", a.ID, err)
	}
	return s.InTx(ctx, func(ctx context.Context) error {
		_, err := s.q(ctx).Exec(ctx,
			`INSERT INTO agents (id, tenant_id, name, version, capabilities, endpoint, labels, metadata,
				criticality, status, heartbeat_at, load, created_at, updated_at, revision)
			 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`,
			a.ID, a.TenantID, a.Name, a.Version, enc.capabilities, a.Endpoint, enc.labels, enc.metadata,
			string(a.Criticality), string(a.Status), a.HeartbeatAt, enc.load, a.CreatedAt, a.UpdatedAt, a.Revision)
		switch {
		case isUniqueViolation(err):
			return errs.Wrap(errs.Conflict, err, "agent %s or name %q already exists in tenant %s", a.ID, a.Name, a.TenantID)
		case isForeignKeyViolation(err):
			return errs.Wrap(errs.NotFound, err, "tenant %s not found", a.TenantID)
		case err != nil:
			return fmt.Errorf("create agent %s: %w", a.ID, err)
		}
		if _, err := s.q(ctx).Exec(ctx, insertAgentCapabilities, enc.names, a.TenantID, a.ID); err != nil {
			return fmt.Errorf("create agent %s capabilities: %w", a.ID, err)
		}
		return nil
	})
}

// AgentByID returns the tenant's agent, or an errs.NotFound.
func (s *Store) AgentByID(ctx context.Context, tenantID, id string) (registry.Agent, error) {
	a, err := scanAgent(s.q(ctx).QueryRow(ctx,
		`SELECT `+agentColumns+` FROM agents a WHERE a.tenant_id = $1 AND a.id = $2`, tenantID, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return registry.Agent{}, errs.New(errs.NotFound, "agent %s not found", id)
	}
	if err != nil {
		return registry.Agent{}, fmt.Errorf("get agent %s: %w", id, err)
	}
	return a, nil
}

// ListAgents returns up to q.Limit of the tenant's agents matching q in (created_at, id) order,
// and an empty (non-nil) slice when none match. With a capability it walks that capability's
// index, already in list order.
func (s *Store) ListAgents(ctx context.Context, tenantID string, q registry.ListQuery) ([]registry.Agent, error) {
	var (
		query string
		args  []any
	)
	switch {
	case q.Capability == "" && q.After == nil:
		query = `SELECT ` + agentColumns + ` FROM agents a WHERE a.tenant_id = $1
			ORDER BY a.created_at, a.id LIMIT $2`
		args = []any{tenantID, q.Limit}
	case q.Capability == "":
		query = `SELECT ` + agentColumns + ` FROM agents a WHERE a.tenant_id = $1 AND (a.created_at, a.id) > ($2, $3)
			ORDER BY a.created_at, a.id LIMIT $4`
		args = []any{tenantID, q.After.CreatedAt, q.After.ID, q.Limit}
	case q.After == nil:
		query = `SELECT ` + agentColumns + ` FROM agent_capabilities c
			JOIN agents a ON a.tenant_id = c.tenant_id AND a.id = c.agent_id
			WHERE c.tenant_id = $1 AND c.name = $2
			ORDER BY c.agent_created_at, c.agent_id LIMIT $3`
		args = []any{tenantID, q.Capability, q.Limit}
	default:
		query = `SELECT ` + agentColumns + ` FROM agent_capabilities c
			JOIN agents a ON a.tenant_id = c.tenant_id AND a.id = c.agent_id
			WHERE c.tenant_id = $1 AND c.name = $2 AND (c.agent_created_at, c.agent_id) > ($3, $4)
			ORDER BY c.agent_created_at, c.agent_id LIMIT $5`
		args = []any{tenantID, q.Capability, q.After.CreatedAt, q.After.ID, q.Limit}
	}
	rows, err := s.q(ctx).Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list agents of tenant %s: %w", tenantID, err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (registry.Agent, error) { return scanAgent(row) })
	if err != nil {
		return nil, fmt.Errorf("list agents of tenant %s: %w", tenantID, err)
	}
	if out == nil {
		out = []registry.Agent{}
	}
	return out, nil
}

// UpdateAgent writes the registration fields of a, its UpdatedAt and Revision where the stored
// revision is prevRevision, and replaces its capability rows. Status, HeartbeatAt, Load and
// CreatedAt keep their stored values.
func (s *Store) UpdateAgent(ctx context.Context, a registry.Agent, prevRevision int64) error {
	enc, err := encodeAgent(a)
	if err != nil {
		return fmt.Errorf("update agent %s: %w", a.ID, err)
	}
	return s.InTx(ctx, func(ctx context.Context) error {
		tag, err := s.q(ctx).Exec(ctx,
			`UPDATE agents SET name = $1, version = $2, capabilities = $3, endpoint = $4, labels = $5, metadata = $6,
				criticality = $7, updated_at = $8, revision = $9
			 WHERE tenant_id = $10 AND id = $11 AND revision = $12`,
			a.Name, a.Version, enc.capabilities, a.Endpoint, enc.labels, enc.metadata,
			string(a.Criticality), a.UpdatedAt, a.Revision, a.TenantID, a.ID, prevRevision)
		if isUniqueViolation(err) {
			return errs.Wrap(errs.Conflict, err, "agent name %q already exists in tenant %s", a.Name, a.TenantID)
		}
		if err != nil {
			return fmt.Errorf("update agent %s: %w", a.ID, err)
		}
		if err := s.agentWritten(ctx, tag, a.TenantID, a.ID, prevRevision); err != nil {
			return err
		}
		// The UPDATE holds the agent's row lock until the transaction ends, so no other writer
		// replaces these rows in between.
		if _, err := s.q(ctx).Exec(ctx,
			`DELETE FROM agent_capabilities WHERE tenant_id = $1 AND agent_id = $2`, a.TenantID, a.ID); err != nil {
			return fmt.Errorf("update agent %s capabilities: %w", a.ID, err)
		}
		if _, err := s.q(ctx).Exec(ctx, insertAgentCapabilities, enc.names, a.TenantID, a.ID); err != nil {
			return fmt.Errorf("update agent %s capabilities: %w", a.ID, err)
		}
		return nil
	})
}

// DeleteAgent deletes the agent where the stored revision is revision; its capability rows and
// API keys go with it (foreign keys, ON DELETE CASCADE).
func (s *Store) DeleteAgent(ctx context.Context, tenantID, id string, revision int64) error {
	tag, err := s.q(ctx).Exec(ctx,
		`DELETE FROM agents WHERE tenant_id = $1 AND id = $2 AND revision = $3`, tenantID, id, revision)
	if err != nil {
		return fmt.Errorf("delete agent %s: %w", id, err)
	}
	return s.agentWritten(ctx, tag, tenantID, id, revision)
}

// agentWritten turns the result of a compare-and-set write on one agent into nil, an
// errs.NotFound (the agent is gone) or an errs.Conflict wrapping registry.ErrPreconditionFailed
// (its revision is no longer revision).
func (s *Store) agentWritten(ctx context.Context, tag pgconn.CommandTag, tenantID, id string, revision int64) error {
	if tag.RowsAffected() == 1 {
		return nil
	}
	exists, err := s.rowExists(ctx, `SELECT 1 FROM agents WHERE tenant_id = $1 AND id = $2`, tenantID, id)
	if err != nil {
		return fmt.Errorf("write agent %s: %w", id, err)
	}
	if !exists {
		return errs.New(errs.NotFound, "agent %s not found", id)
	}
	return errs.Wrap(errs.Conflict, registry.ErrPreconditionFailed, "agent %s changed since revision %d", id, revision)
}

// Heartbeat sets the agent's heartbeat_at, load and status (healthy) and returns the status stored
// before, in one statement. See the file comment for its cost.
func (s *Store) Heartbeat(ctx context.Context, tenantID, id string, at time.Time, load registry.Load) (registry.Status, error) {
	loadJSON, err := json.Marshal(load)
	if err != nil {
		return "", fmt.Errorf("heartbeat of agent %s: encode load: %w", id, err)
	}
	var prev string
	err = s.q(ctx).QueryRow(ctx,
		`UPDATE agents a SET heartbeat_at = $3, load = $4, status = 'healthy'
		 FROM (SELECT tenant_id, id, status FROM agents WHERE tenant_id = $1 AND id = $2 FOR NO KEY UPDATE) old
		 WHERE a.tenant_id = old.tenant_id AND a.id = old.id
		 RETURNING old.status`,
		tenantID, id, at, string(loadJSON)).Scan(&prev)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", errs.New(errs.NotFound, "agent %s not found", id)
	}
	if err != nil {
		return "", fmt.Errorf("heartbeat of agent %s: %w", id, err)
	}
	return registry.Status(prev), nil
}

// SetAgentStatus stores c.To where the stored status is still c.From and heartbeat_at still
// c.HeartbeatAt, and reports whether it did; a missing agent reports false.
func (s *Store) SetAgentStatus(ctx context.Context, c registry.StatusChange) (bool, error) {
	tag, err := s.q(ctx).Exec(ctx,
		`UPDATE agents SET status = $1 WHERE tenant_id = $2 AND id = $3 AND status = $4 AND heartbeat_at = $5`,
		string(c.To), c.TenantID, c.AgentID, string(c.From), c.HeartbeatAt)
	if err != nil {
		return false, fmt.Errorf("set status of agent %s: %w", c.AgentID, err)
	}
	return tag.RowsAffected() == 1, nil
}

// SweepCandidates returns up to limit agents of every tenant whose stored status differs from the
// one their heartbeat age implies (see registry.Store), in (created_at, id) order, or nil. It
// reads the whole table: see migration 00004 for why heartbeat_at is not indexed.
func (s *Store) SweepCandidates(ctx context.Context, staleAt, zombieAt time.Time, limit int) ([]registry.Agent, error) {
	rows, err := s.q(ctx).Query(ctx,
		`SELECT `+agentColumns+` FROM agents a
		 WHERE (a.heartbeat_at > $1 AND a.status <> 'healthy')
		    OR (a.heartbeat_at <= $1 AND a.heartbeat_at > $2 AND a.status <> 'stale')
		    OR (a.heartbeat_at <= $2 AND a.status <> 'zombie')
		 ORDER BY a.created_at, a.id LIMIT $3`,
		staleAt, zombieAt, limit)
	if err != nil {
		return nil, fmt.Errorf("sweep candidates: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (registry.Agent, error) { return scanAgent(row) })
	if err != nil {
		return nil, fmt.Errorf("sweep candidates: %w", err)
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// RoutingCandidates returns up to limit of the tenant's agents offering capability with a
// heartbeat after heartbeatAfter, each with its tenant's status, in (created_at, id) order (the
// capability index's), or nil.
func (s *Store) RoutingCandidates(ctx context.Context, tenantID, capability string, heartbeatAfter time.Time, limit int) ([]registry.Candidate, error) {
	rows, err := s.q(ctx).Query(ctx,
		`SELECT `+agentColumns+`, t.status FROM agent_capabilities c
		 JOIN agents a ON a.tenant_id = c.tenant_id AND a.id = c.agent_id
		 JOIN tenants t ON t.id = a.tenant_id
		 WHERE c.tenant_id = $1 AND c.name = $2 AND a.heartbeat_at > $3
		 ORDER BY c.agent_created_at, c.agent_id LIMIT $4`,
		tenantID, capability, heartbeatAfter, limit)
	if err != nil {
		return nil, fmt.Errorf("routing candidates for %s: %w", capability, err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (registry.Candidate, error) {
		var status string
		a, err := scanAgent(row, &status)
		return registry.Candidate{Agent: a, TenantStatus: tenant.Status(status)}, err
	})
	if err != nil {
		return nil, fmt.Errorf("routing candidates for %s: %w", capability, err)
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// scanAgent reads agentColumns, then extra.
func scanAgent(row pgx.Row, extra ...any) (registry.Agent, error) {
	var (
		a                                    registry.Agent
		capabilities, labels, metadata, load []byte
		criticality, status                  string
	)
	dest := append([]any{&a.ID, &a.TenantID, &a.Name, &a.Version, &capabilities, &a.Endpoint, &labels, &metadata,
		&criticality, &status, &a.HeartbeatAt, &load, &a.CreatedAt, &a.UpdatedAt, &a.Revision}, extra...)
	if err := row.Scan(dest...); err != nil {
		return registry.Agent{}, err
	}
	a.Criticality, a.Status = registry.Criticality(criticality), registry.Status(status)
	a.HeartbeatAt, a.CreatedAt, a.UpdatedAt = a.HeartbeatAt.UTC(), a.CreatedAt.UTC(), a.UpdatedAt.UTC()
	// encoding/json decodes [] and {} to empty, non-nil values.
	for _, f := range []struct {
		name string
		src  []byte
		dst  any
	}{
		{"capabilities", capabilities, &a.Capabilities},
		{"labels", labels, &a.Labels},
		{"metadata", metadata, &a.Metadata},
		{"load", load, &a.Load},
	} {
		if err := json.Unmarshal(f.src, f.dst); err != nil {
			return registry.Agent{}, fmt.Errorf("agent %s %s: %w", a.ID, f.name, err)
		}
	}
	return a, nil
}

// agentJSON is an agent's JSON columns, and its capability names that fill agent_capabilities.
type agentJSON struct {
	capabilities, labels, metadata, load string
	names                                []string
}

func encodeAgent(a registry.Agent) (agentJSON, error) {
	var (
		enc agentJSON
		err error
	)
	if enc.capabilities, err = marshalOrEmpty(a.Capabilities, "[]"); err != nil {
		return agentJSON{}, fmt.Errorf("encode capabilities: %w", err)
	}
	if enc.labels, err = marshalOrEmpty(a.Labels, "{}"); err != nil {
		return agentJSON{}, fmt.Errorf("encode labels: %w", err)
	}
	if enc.metadata, err = marshalOrEmpty(a.Metadata, "{}"); err != nil {
		return agentJSON{}, fmt.Errorf("encode metadata: %w", err)
	}
	if enc.load, err = marshalOrEmpty(a.Load, "{}"); err != nil {
		return agentJSON{}, fmt.Errorf("encode load: %w", err)
	}
	enc.names = make([]string, 0, len(a.Capabilities))
	for _, c := range a.Capabilities {
		enc.names = append(enc.names, c.Name)
	}
	return enc, nil
}

// marshalOrEmpty encodes v, writing empty for a nil slice or map so the column always holds an
// array or object.
func marshalOrEmpty(v any, empty string) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	if string(b) == "null" {
		return empty, nil
	}
	return string(b), nil
}
