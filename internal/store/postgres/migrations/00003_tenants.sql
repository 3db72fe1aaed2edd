-- Tenants (internal/tenant): the isolation boundary every agent, API key and audit record belongs
-- to. version guards writes (compare-and-set). IDs collate as bytes ("C"), so that ORDER BY and
-- cursor comparisons agree with Go's string order whatever the database's locale.
-- +goose Up
CREATE TABLE tenants (
    id           text COLLATE "C" PRIMARY KEY,
    name         text NOT NULL CONSTRAINT tenants_name_key UNIQUE,
    display_name text NOT NULL,
    status       text NOT NULL CHECK (status IN ('active', 'suspended')),
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    version      bigint NOT NULL CHECK (version >= 1)
);

-- ListTenants pages by (created_at, id).
CREATE INDEX tenants_page ON tenants (created_at, id);

-- +goose Down
DROP TABLE tenants;
