// The agent registry (registry.Store), tables agents and agent_capabilities of migration 00004.
//
// Capabilities, labels, metadata and load are JSON text as encoding/json writes them; nil
// collections are stored empty and read back empty (non-nil), as registry.AgentInput.Normalize
// makes them. agent_capabilities mirrors the names in capabilities, so that ListAgents and
// RoutingCandidates filter by capability in SQL; CreateAgent and UpdateAgent write both in one
// transaction (InTx, which joins the caller's or makes one for the call), and deleting an agent
// deletes its rows by foreign key.
//
// Heartbeat costs two statements on the one writer connection: a primary-key read of the stored
// status and a primary-key UPDATE of heartbeat_at, load and status, in one transaction so that no
// other write lands in between. SQLite's RETURNING yields only new values, and an UPDATE ... FROM
// may not return the other table's columns, so the previous status cannot come back from the
// UPDATE itself. Both statements touch one row on pages the read has just cached; the cost that
// matters is the commit's fsync, one per transaction either way, and none of the written columns
// is indexed, so the UPDATE rewrites the row alone.

package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/registry"
	"github.com/nops-kernel/nops/internal/tenant"
)

var _ registry.Store = (*Store)(nil)

// agentColumns are the columns scanAgent reads, of agents aliased a.
const agentColumns = `a.id, a.tenant_id, a.name, a.version, a.capabilities, a.endpoint, a.labels, a.metadata,
	a.criticality, a.status, a.heartbeat_at, a.load, a.created_at, a.updated_at, a.revision`

// insertAgentCapabilities fills agent_capabilities from the agent's row, given tenant, agent and
// a JSON array of names. DISTINCT keeps a repeated name from failing the primary key.
const insertAgentCapabilities = `INSERT INTO agent_capabilities (tenant_id, agent_id, name, agent_created_at)
	SELECT DISTINCT a.tenant_id, a.id, j.value, a.created_at FROM agents a, json_each(?) j
	WHERE a.tenant_id = ? AND a.id = ?`

// CreateAgent inserts a. A taken ID, or a name taken in the tenant, is an errs.Conflict; an
// unknown tenant is an errs.NotFound.
func (s *Store) CreateAgent(ctx context.Context, a registry.Agent) error {
	enc, err := encodeAgent(a)
	if err != nil {
		return fmt.Errorf("create agent %s: %w", a.ID, err)
	}
	return s.InTx(ctx, func(ctx context.Context) error {
		_, err := s.w(ctx).ExecContext(ctx,
			`INSERT INTO agents (id, tenant_id, name, version, capabilities, endpoint, labels, metadata,
				criticality, status, heartbeat_at, load, created_at, updated_at, revision)
			 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			a.ID, a.TenantID, a.Name, a.Version, enc.capabilities, a.Endpoint, enc.labels, enc.metadata,
			string(a.Criticality), string(a.Status), formatTime(a.HeartbeatAt), enc.load,
			formatTime(a.CreatedAt), formatTime(a.UpdatedAt), a.Revision)
		switch {
		case isUniqueViolation(err):
			return errs.Wrap(errs.Conflict, err, "agent %s or name %q already exists in tenant %s", a.ID, a.Name, a.TenantID)
		case isForeignKeyViolation(err):
			return errs.Wrap(errs.NotFound, err, "tenant %s not found", a.TenantID)
		case err != nil:
			return fmt.Errorf("create agent %s: %w", a.ID, err)
		}
		if _, err := s.w(ctx).ExecContext(ctx, insertAgentCapabilities, enc.names, a.TenantID, a.ID); err != nil {
			return fmt.Errorf("create agent %s capabilities: %w", a.ID, err)
		}
		return nil
	})
}

// AgentByID returns the tenant's agent, or an errs.NotFound.
func (s *Store) AgentByID(ctx context.Context, tenantID, id string) (registry.Agent, error) {
	a, err := scanAgent(s.r(ctx).QueryRowContext(ctx,
		`SELECT `+agentColumns+` FROM agents a WHERE a.tenant_id = ? AND a.id = ?`, tenantID, id))
	if errors.Is(err, sql.ErrNoRows) {
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
		query = `SELECT ` + agentColumns + ` FROM agents a WHERE a.tenant_id = ?
			ORDER BY a.created_at, a.id LIMIT ?`
		args = []any{tenantID, q.Limit}
	case q.Capability == "":
		query = `SELECT ` + agentColumns + ` FROM agents a WHERE a.tenant_id = ? AND (a.created_at, a.id) > (?, ?)
			ORDER BY a.created_at, a.id LIMIT ?`
		args = []any{tenantID, formatTime(q.After.CreatedAt), q.After.ID, q.Limit}
	case q.After == nil:
		query = `SELECT ` + agentColumns + ` FROM agent_capabilities c
			JOIN agents a ON a.tenant_id = c.tenant_id AND a.id = c.agent_id
			WHERE c.tenant_id = ? AND c.name = ?
			ORDER BY c.agent_created_at, c.agent_id LIMIT ?`
		args = []any{tenantID, q.Capability, q.Limit}
	default:
		query = `SELECT ` + agentColumns + ` FROM agent_capabilities c
			JOIN agents a ON a.tenant_id = c.tenant_id AND a.id = c.agent_id
			WHERE c.tenant_id = ? AND c.name = ? AND (c.agent_created_at, c.agent_id) > (?, ?)
			ORDER BY c.agent_created_at, c.agent_id LIMIT ?`
		args = []any{tenantID, q.Capability, formatTime(q.After.CreatedAt), q.After.ID, q.Limit}
	}
	out, err := s.queryAgents(ctx, query, args...)
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
		res, err := s.w(ctx).ExecContext(ctx,
			`UPDATE agents SET name = ?, version = ?, capabilities = ?, endpoint = ?, labels = ?, metadata = ?,
				criticality = ?, updated_at = ?, revision = ?
			 WHERE tenant_id = ? AND id = ? AND revision = ?`,
			a.Name, a.Version, enc.capabilities, a.Endpoint, enc.labels, enc.metadata,
			string(a.Criticality), formatTime(a.UpdatedAt), a.Revision, a.TenantID, a.ID, prevRevision)
		if isUniqueViolation(err) {
			return errs.Wrap(errs.Conflict, err, "agent name %q already exists in tenant %s", a.Name, a.TenantID)
		}
		if err != nil {
			return fmt.Errorf("update agent %s: %w", a.ID, err)
		}
		if err := s.agentWritten(ctx, res, a.TenantID, a.ID, prevRevision); err != nil {
			return err
		}
		if _, err := s.w(ctx).ExecContext(ctx,
			`DELETE FROM agent_capabilities WHERE tenant_id = ? AND agent_id = ?`, a.TenantID, a.ID); err != nil {
			return fmt.Errorf("update agent %s capabilities: %w", a.ID, err)
		}
		if _, err := s.w(ctx).ExecContext(ctx, insertAgentCapabilities, enc.names, a.TenantID, a.ID); err != nil {
			return fmt.Errorf("update agent %s capabilities: %w", a.ID, err)
		}
		return nil
	})
}

// DeleteAgent deletes the agent where the stored revision is revision; its capability rows and
// API keys go with it (foreign keys, ON DELETE CASCADE).
func (s *Store) DeleteAgent(ctx context.Context, tenantID, id string, revision int64) error {
	res, err := s.w(ctx).ExecContext(ctx,
		`DELETE FROM agents WHERE tenant_id = ? AND id = ? AND revision = ?`, tenantID, id, revision)
	if err != nil {
		return fmt.Errorf("delete agent %s: %w", id, err)
	}
	return s.agentWritten(ctx, res, tenantID, id, revision)
}

// agentWritten turns the result of a compare-and-set write on one agent into nil, an
// errs.NotFound (the agent is gone) or an errs.Conflict wrapping registry.ErrPreconditionFailed
// (its revision is no longer revision).
func (s *Store) agentWritten(ctx context.Context, res sql.Result, tenantID, id string, revision int64) error {
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("write agent %s: %w", id, err)
	}
	if n == 1 {
		return nil
	}
	exists, err := s.rowExists(ctx, `SELECT 1 FROM agents WHERE tenant_id = ? AND id = ?`, tenantID, id)
	if err != nil {
		return fmt.Errorf("write agent %s: %w", id, err)
	}
	if !exists {
		return errs.New(errs.NotFound, "agent %s not found", id)
	}
	return errs.Wrap(errs.Conflict, registry.ErrPreconditionFailed, "agent %s changed since revision %d", id, revision)
}

// Heartbeat sets the agent's heartbeat_at, load and status (healthy) and returns the status stored
// before. See the file comment for its cost.
func (s *Store) Heartbeat(ctx context.Context, tenantID, id string, at time.Time, load registry.Load) (registry.Status, error) {
	loadJSON, err := json.Marshal(load)
	if err != nil {
		return "", fmt.Errorf("heartbeat of agent %s: encode load: %w", id, err)
	}
	var prev string
	err = s.InTx(ctx, func(ctx context.Context) error {
		err := s.w(ctx).QueryRowContext(ctx,
			`SELECT status FROM agents WHERE tenant_id = ? AND id = ?`, tenantID, id).Scan(&prev)
		if errors.Is(err, sql.ErrNoRows) {
			return errs.New(errs.NotFound, "agent %s not found", id)
		}
		if err != nil {
			return fmt.Errorf("heartbeat of agent %s: %w", id, err)
		}
		_, err = s.w(ctx).ExecContext(ctx,
			`UPDATE agents SET heartbeat_at = ?, load = ?, status = ? WHERE tenant_id = ? AND id = ?`,
			formatTime(at), string(loadJSON), string(registry.StatusHealthy), tenantID, id)
		if err != nil {
			return fmt.Errorf("heartbeat of agent %s: %w", id, err)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	return registry.Status(prev), nil
}

// SetAgentStatus stores c.To where the stored status is still c.From and heartbeat_at still
// c.HeartbeatAt, and reports whether it did; a missing agent reports false.
func (s *Store) SetAgentStatus(ctx context.Context, c registry.StatusChange) (bool, error) {
	res, err := s.w(ctx).ExecContext(ctx,
		`UPDATE agents SET status = ? WHERE tenant_id = ? AND id = ? AND status = ? AND heartbeat_at = ?`,
		string(c.To), c.TenantID, c.AgentID, string(c.From), formatTime(c.HeartbeatAt))
	if err != nil {
		return false, fmt.Errorf("set status of agent %s: %w", c.AgentID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("set status of agent %s: %w", c.AgentID, err)
	}
	return n == 1, nil
}

// SweepCandidates returns up to limit agents of every tenant whose stored status differs from the
// one their heartbeat age implies (see registry.Store), in (created_at, id) order, or nil. It
// reads the whole table: see migration 00004 for why heartbeat_at is not indexed.
func (s *Store) SweepCandidates(ctx context.Context, staleAt, zombieAt time.Time, limit int) ([]registry.Agent, error) {
	stale, zombie := formatTime(staleAt), formatTime(zombieAt)
	out, err := s.queryAgents(ctx,
		`SELECT `+agentColumns+` FROM agents a
		 WHERE (a.heartbeat_at > ? AND a.status <> 'healthy')
		    OR (a.heartbeat_at <= ? AND a.heartbeat_at > ? AND a.status <> 'stale')
		    OR (a.heartbeat_at <= ? AND a.status <> 'zombie')
		 ORDER BY a.created_at, a.id LIMIT ?`,
		stale, stale, zombie, zombie, limit)
	if err != nil {
		return nil, fmt.Errorf("sweep candidates: %w", err)
	}
	return out, nil
}

// RoutingCandidates returns up to limit of the tenant's agents offering capability with a
// heartbeat after heartbeatAfter, each with its tenant's status, in (created_at, id) order (the
// capability index's), or nil.
func (s *Store) RoutingCandidates(ctx context.Context, tenantID, capability string, heartbeatAfter time.Time, limit int) ([]registry.Candidate, error) {
	rows, err := s.r(ctx).QueryContext(ctx,
		`SELECT `+agentColumns+`, t.status FROM agent_capabilities c
		 JOIN agents a ON a.tenant_id = c.tenant_id AND a.id = c.agent_id
		 JOIN tenants t ON t.id = a.tenant_id
		 WHERE c.tenant_id = ? AND c.name = ? AND a.heartbeat_at > ?
		 ORDER BY c.agent_created_at, c.agent_id LIMIT ?`,
		tenantID, capability, formatTime(heartbeatAfter), limit)
	if err != nil {
		return nil, fmt.Errorf("routing candidates for %s: %w", capability, err)
	}
	defer rows.Close()
	var out []registry.Candidate
	for rows.Next() {
		var status string
		a, err := scanAgent(rows, &status)
		if err != nil {
			return nil, fmt.Errorf("routing candidates for %s: %w", capability, err)
		}
		out = append(out, registry.Candidate{Agent: a, TenantStatus: tenant.Status(status)})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("routing candidates for %s: %w", capability, err)
	}
	return out, nil
}

func (s *Store) queryAgents(ctx context.Context, query string, args ...any) ([]registry.Agent, error) {
	rows, err := s.r(ctx).QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []registry.Agent
	for rows.Next() {
		a, err := scanAgent(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// scanAgent reads agentColumns, then extra.
func scanAgent(r rowScanner, extra ...any) (registry.Agent, error) {
	var (
		a                                    registry.Agent
		capabilities, labels, metadata, load string
		criticality, status                  string
		heartbeatAt, createdAt, updatedAt    string
	)
	dest := append([]any{&a.ID, &a.TenantID, &a.Name, &a.Version, &capabilities, &a.Endpoint, &labels, &metadata,
		&criticality, &status, &heartbeatAt, &load, &createdAt, &updatedAt, &a.Revision}, extra...)
	if err := r.Scan(dest...); err != nil {
		return registry.Agent{}, err
	}
	a.Criticality, a.Status = registry.Criticality(criticality), registry.Status(status)
	if err := decodeAgentJSON(&a, capabilities, labels, metadata, load); err != nil {
		return registry.Agent{}, err
	}
	var err error
	if a.HeartbeatAt, err = parseTime(heartbeatAt); err != nil {
		return registry.Agent{}, fmt.Errorf("agent %s heartbeat_at: %w", a.ID, err)
	}
	if a.CreatedAt, err = parseTime(createdAt); err != nil {
		return registry.Agent{}, fmt.Errorf("agent %s created_at: %w", a.ID, err)
	}
	if a.UpdatedAt, err = parseTime(updatedAt); err != nil {
		return registry.Agent{}, fmt.Errorf("agent %s updated_at: %w", a.ID, err)
	}
	return a, nil
}

// agentJSON is an agent's JSON columns, and the JSON array of its capability names that fills
// agent_capabilities.
type agentJSON struct {
	capabilities, labels, metadata, load, names string
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
	names := make([]string, 0, len(a.Capabilities))
	for _, c := range a.Capabilities {
		names = append(names, c.Name)
	}
	if enc.names, err = marshalOrEmpty(names, "[]"); err != nil {
		return agentJSON{}, fmt.Errorf("encode capability names: %w", err)
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

// decodeAgentJSON fills a's JSON fields. encoding/json decodes [] and {} to empty, non-nil values.
func decodeAgentJSON(a *registry.Agent, capabilities, labels, metadata, load string) error {
	if err := json.Unmarshal([]byte(capabilities), &a.Capabilities); err != nil {
		return fmt.Errorf("agent %s capabilities: %w", a.ID, err)
	}
	if err := json.Unmarshal([]byte(labels), &a.Labels); err != nil {
		return fmt.Errorf("agent %s labels: %w", a.ID, err)
	}
	if err := json.Unmarshal([]byte(metadata), &a.Metadata); err != nil {
		return fmt.Errorf("agent %s metadata: %w", a.ID, err)
	}
	if err := json.Unmarshal([]byte(load), &a.Load); err != nil {
		return fmt.Errorf("agent %s load: %w", a.ID, err)
	}
	return nil
}
