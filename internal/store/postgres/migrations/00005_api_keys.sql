-- API keys (internal/apikey): digests only, never secrets. A key belongs to a tenant and goes with
-- it (ON DELETE CASCADE: tenant.Store.DeleteTenant removes the tenant's keys). A key bound to an
-- agent names it within the key's own tenant (composite foreign key) and goes with the agent: the
-- domain documents nothing else, and a key acting for an agent that no longer exists has nothing
-- left to act for. NULL times and prev_hash mean "none" (the zero value of apikey.Key). IDs collate
-- as bytes ("C"), so that listing order and cursors agree with Go's string order.
-- +goose Up
CREATE TABLE api_keys (
    id                  text COLLATE "C" PRIMARY KEY,
    tenant_id           text COLLATE "C" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    agent_id            text COLLATE "C",
    name                text NOT NULL,
    role                text NOT NULL,
    scopes              jsonb NOT NULL CHECK (jsonb_typeof(scopes) = 'array'),
    created_by          text NOT NULL,
    hash                bytea NOT NULL,
    pepper_version      text NOT NULL,
    prev_hash           bytea,
    prev_pepper_version text NOT NULL,
    prev_valid_until    timestamptz,
    created_at          timestamptz NOT NULL,
    expires_at          timestamptz,
    revoked_at          timestamptz,
    last_used_at        timestamptz,
    FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id) ON DELETE CASCADE
);

-- ListAPIKeys pages one tenant by id.
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, id);
-- Deleting an agent finds its keys through this index rather than scanning its tenant's.
CREATE INDEX api_keys_agent ON api_keys (tenant_id, agent_id);

-- +goose Down
DROP TABLE api_keys;
