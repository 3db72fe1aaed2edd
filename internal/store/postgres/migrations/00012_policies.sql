-- ABAC policies (internal/policy). A policy belongs to a tenant and goes with it (ON DELETE
-- CASCADE), or, with a NULL tenant_id, is global: it applies to every tenant. Names are unique
-- per tenant and among global policies; the unique index is on coalesce(tenant_id, '') because
-- NULLs are distinct in a UNIQUE constraint. IDs collate as bytes ("C"), so that listing order
-- and cursors agree with Go's string order.
--
-- policy_generation holds one counter that every change to policies bumps, through a trigger so
-- that no write path can forget it, a tenant's cascading deletion included. Each replica's policy
-- engine reads it every refresh interval and reloads the policies only when it moved. The
-- trigger is per row: referential actions fire row triggers. Bumping one row serialises policy
-- writes, which are rare.
-- +goose Up
CREATE TABLE policies (
    id          text COLLATE "C" PRIMARY KEY,
    tenant_id   text COLLATE "C" REFERENCES tenants (id) ON DELETE CASCADE,
    name        text NOT NULL,
    description text NOT NULL,
    effect      text NOT NULL CHECK (effect IN ('allow', 'deny')),
    expression  text NOT NULL,
    enabled     boolean NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    version     bigint NOT NULL CHECK (version >= 1)
);

CREATE UNIQUE INDEX policies_name ON policies ((coalesce(tenant_id, '')), name);
-- ListPolicies pages one tenant (or the global policies) by id.
CREATE INDEX policies_tenant ON policies ((coalesce(tenant_id, '')), id);

CREATE TABLE policy_generation (
    id         integer PRIMARY KEY CHECK (id = 1),
    generation bigint NOT NULL
);
INSERT INTO policy_generation (id, generation) VALUES (1, 0);

-- +goose StatementBegin
CREATE FUNCTION policies_bump_generation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE policy_generation SET generation = generation + 1 WHERE id = 1;
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

CREATE TRIGGER policies_changed AFTER INSERT OR UPDATE OR DELETE ON policies
    FOR EACH ROW EXECUTE FUNCTION policies_bump_generation();

-- +goose Down
DROP TABLE policy_generation;
DROP TABLE policies;
DROP FUNCTION policies_bump_generation();
