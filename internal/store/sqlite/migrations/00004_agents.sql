-- The agent registry (internal/registry). An agent belongs to one tenant, and a tenant with agents
-- cannot be deleted (ON DELETE RESTRICT): tenant.Store.DeleteTenant reports that as a conflict, so
-- the rule holds even when an agent registers while its tenant is being deleted. The free-form
-- fields are JSON text, kept byte for byte as the adapter writes them (capability schemas keep
-- their key order). Times are RFC 3339 UTC text with a fixed nine-digit fraction, so text order
-- is time order.
--
-- Neither heartbeat_at nor status is indexed, on purpose: a heartbeat then rewrites the row alone,
-- not index entries too. The sweep reads the whole table instead, once per sweep interval.
-- +goose Up
CREATE TABLE agents (
    id           TEXT NOT NULL PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id) ON DELETE RESTRICT,
    name         TEXT NOT NULL,
    version      TEXT NOT NULL,
    capabilities TEXT NOT NULL CHECK (json_valid(capabilities) AND json_type(capabilities) = 'array'),
    endpoint     TEXT NOT NULL,
    labels       TEXT NOT NULL CHECK (json_valid(labels) AND json_type(labels) = 'object'),
    metadata     TEXT NOT NULL CHECK (json_valid(metadata) AND json_type(metadata) = 'object'),
    criticality  TEXT NOT NULL CHECK (criticality IN ('critical', 'essential', 'best_effort')),
    -- '' is a status never announced (registry.StatusChange.From).
    status       TEXT NOT NULL CHECK (status IN ('', 'healthy', 'stale', 'zombie')),
    heartbeat_at TEXT NOT NULL,
    load         TEXT NOT NULL CHECK (json_valid(load) AND json_type(load) = 'object'),
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    revision     INTEGER NOT NULL CHECK (revision >= 1),
    UNIQUE (tenant_id, name),
    -- The target of the composite foreign keys below and in api_keys: a row naming an agent
    -- names it within its own tenant.
    UNIQUE (tenant_id, id)
) STRICT;

-- ListAgents pages one tenant by (created_at, id).
CREATE INDEX agents_page ON agents (tenant_id, created_at, id);

-- One row per capability an agent offers, so that listing and routing filter by capability in
-- SQL. agent_created_at copies the agent's (immutable) created_at so that the index below returns
-- one capability's agents already in list order: a page costs its own rows, not a sort of every
-- agent offering the capability.
CREATE TABLE agent_capabilities (
    tenant_id        TEXT NOT NULL,
    agent_id         TEXT NOT NULL,
    name             TEXT NOT NULL,
    agent_created_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, agent_id, name),
    FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

CREATE INDEX agent_capabilities_by_name ON agent_capabilities (tenant_id, name, agent_created_at, agent_id);

-- +goose Down
DROP TABLE agent_capabilities;
DROP TABLE agents;
