-- API keys (internal/apikey): digests only, never secrets. A key belongs to a tenant and goes with
-- it (ON DELETE CASCADE: tenant.Store.DeleteTenant removes the tenant's keys). A key bound to an
-- agent names it within the key's own tenant (composite foreign key) and goes with the agent: the
-- domain documents nothing else, and a key acting for an agent that no longer exists has nothing
-- left to act for. NULL times and prev_hash mean "none" (the zero value of apikey.Key). Times are
-- RFC 3339 UTC text with a fixed nine-digit fraction, so text order is time order, which
-- TouchAPIKeys relies on to keep the later last use.
-- +goose Up
CREATE TABLE api_keys (
    id                  TEXT NOT NULL PRIMARY KEY,
    tenant_id           TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    agent_id            TEXT,
    name                TEXT NOT NULL,
    role                TEXT NOT NULL,
    scopes              TEXT NOT NULL CHECK (json_valid(scopes) AND json_type(scopes) = 'array'),
    created_by          TEXT NOT NULL,
    hash                BLOB NOT NULL,
    pepper_version      TEXT NOT NULL,
    prev_hash           BLOB,
    prev_pepper_version TEXT NOT NULL,
    prev_valid_until    TEXT,
    created_at          TEXT NOT NULL,
    expires_at          TEXT,
    revoked_at          TEXT,
    last_used_at        TEXT,
    FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id) ON DELETE CASCADE
) STRICT;

-- ListAPIKeys pages one tenant by id.
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, id);
-- Deleting an agent finds its keys through this index rather than scanning its tenant's.
CREATE INDEX api_keys_agent ON api_keys (tenant_id, agent_id);

-- +goose Down
DROP TABLE api_keys;
