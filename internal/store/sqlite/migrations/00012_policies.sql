-- ABAC policies (internal/policy). A policy belongs to a tenant and goes with it (ON DELETE
-- CASCADE), or, with a NULL tenant_id, is global: it applies to every tenant. Names are unique
-- per tenant and among global policies; the unique index is on coalesce(tenant_id, '') because
-- NULLs are distinct in a UNIQUE constraint. Times are RFC 3339 UTC text with a fixed nine-digit
-- fraction.
--
-- policy_generation holds one counter that every change to policies bumps, through triggers so
-- that no write path can forget it, a tenant's cascading deletion included. Each replica's policy
-- engine reads it every refresh interval and reloads the policies only when it moved.
-- +goose Up
CREATE TABLE policies (
    id          TEXT NOT NULL PRIMARY KEY,
    tenant_id   TEXT REFERENCES tenants (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    description TEXT NOT NULL,
    effect      TEXT NOT NULL CHECK (effect IN ('allow', 'deny')),
    expression  TEXT NOT NULL,
    enabled     INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    version     INTEGER NOT NULL CHECK (version >= 1)
) STRICT;

CREATE UNIQUE INDEX policies_name ON policies (coalesce(tenant_id, ''), name);
-- ListPolicies pages one tenant (or the global policies) by id.
CREATE INDEX policies_tenant ON policies (coalesce(tenant_id, ''), id);

CREATE TABLE policy_generation (
    id         INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    generation INTEGER NOT NULL
) STRICT;
INSERT INTO policy_generation (id, generation) VALUES (1, 0);

-- +goose StatementBegin
CREATE TRIGGER policies_inserted AFTER INSERT ON policies
BEGIN
    UPDATE policy_generation SET generation = generation + 1 WHERE id = 1;
END;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE TRIGGER policies_updated AFTER UPDATE ON policies
BEGIN
    UPDATE policy_generation SET generation = generation + 1 WHERE id = 1;
END;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE TRIGGER policies_deleted AFTER DELETE ON policies
BEGIN
    UPDATE policy_generation SET generation = generation + 1 WHERE id = 1;
END;
-- +goose StatementEnd

-- +goose Down
DROP TABLE policy_generation;
DROP TABLE policies;
