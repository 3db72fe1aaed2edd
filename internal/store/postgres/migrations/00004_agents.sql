-- The agent registry (internal/registry). An agent belongs to one tenant, and a tenant with agents
-- cannot be deleted (ON DELETE RESTRICT): tenant.Store.DeleteTenant reports that as a conflict, so
-- the rule holds even when an agent registers while its tenant is being deleted. IDs collate as
-- bytes ("C"), so that ORDER BY and cursor comparisons agree with Go's string order.
--
-- capabilities and metadata are json, not jsonb: json keeps the text as written, so capability
-- schemas keep their key order and spelling (a Service compares registrations as JSON bytes), and
-- it accepts every string Go can encode, where jsonb refuses "\u0000" and SQLite does not. labels
-- and load are jsonb: validated names and numbers, which later queries may filter or rank by.
--
-- Neither heartbeat_at nor status is indexed, and the fillfactor leaves room on each page, so that
-- a heartbeat is a HOT update: a new row version on the same page and no index entry written. The
-- sweep reads the whole table instead, once per sweep interval.
-- +goose Up
CREATE TABLE agents (
    id           text COLLATE "C" PRIMARY KEY,
    tenant_id    text COLLATE "C" NOT NULL REFERENCES tenants (id) ON DELETE RESTRICT,
    name         text NOT NULL,
    version      text NOT NULL,
    capabilities json NOT NULL CHECK (json_typeof(capabilities) = 'array'),
    endpoint     text NOT NULL,
    labels       jsonb NOT NULL CHECK (jsonb_typeof(labels) = 'object'),
    metadata     json NOT NULL CHECK (json_typeof(metadata) = 'object'),
    criticality  text NOT NULL CHECK (criticality IN ('critical', 'essential', 'best_effort')),
    -- '' is a status never announced (registry.StatusChange.From).
    status       text NOT NULL CHECK (status IN ('', 'healthy', 'stale', 'zombie')),
    heartbeat_at timestamptz NOT NULL,
    load         jsonb NOT NULL CHECK (jsonb_typeof(load) = 'object'),
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    revision     bigint NOT NULL CHECK (revision >= 1),
    CONSTRAINT agents_tenant_name_key UNIQUE (tenant_id, name),
    -- The target of the composite foreign keys below and in api_keys: a row naming an agent
    -- names it within its own tenant.
    CONSTRAINT agents_tenant_id_key UNIQUE (tenant_id, id)
) WITH (fillfactor = 80);

-- ListAgents pages one tenant by (created_at, id).
CREATE INDEX agents_page ON agents (tenant_id, created_at, id);

-- One row per capability an agent offers, so that listing and routing filter by capability in
-- SQL. agent_created_at copies the agent's (immutable) created_at so that the index below returns
-- one capability's agents already in list order: a page costs its own rows, not a sort of every
-- agent offering the capability.
CREATE TABLE agent_capabilities (
    tenant_id        text COLLATE "C" NOT NULL,
    agent_id         text COLLATE "C" NOT NULL,
    name             text COLLATE "C" NOT NULL,
    agent_created_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, agent_id, name),
    FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id) ON DELETE CASCADE
);

CREATE INDEX agent_capabilities_by_name ON agent_capabilities (tenant_id, name, agent_created_at, agent_id);

-- +goose Down
DROP TABLE agent_capabilities;
DROP TABLE agents;
