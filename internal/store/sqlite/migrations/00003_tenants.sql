-- Tenants (internal/tenant): the isolation boundary every agent, API key and audit record belongs
-- to. version guards writes (compare-and-set). Times are RFC 3339 UTC text with a fixed nine-digit
-- fraction, so text order is time order. STRICT makes SQLite enforce the column types.
-- +goose Up
CREATE TABLE tenants (
    id           TEXT NOT NULL PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('active', 'suspended')),
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    version      INTEGER NOT NULL CHECK (version >= 1)
) STRICT;

-- ListTenants pages by (created_at, id).
CREATE INDEX tenants_page ON tenants (created_at, id);

-- +goose Down
DROP TABLE tenants;
