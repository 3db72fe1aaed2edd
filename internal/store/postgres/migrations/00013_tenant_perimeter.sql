-- Per-tenant perimeter settings (internal/perimeter): whether the tenant's requests must be
-- signed (RFC 9421), and the networks its gateway traffic may come from (gateway_origins,
-- canonical CIDR prefixes as text, sorted). One row per tenant that set them; a tenant without a
-- row has the defaults. The row goes with its tenant (ON DELETE CASCADE). IDs collate as bytes
-- ("C"), so the listing order agrees with Go's string order.
--
-- tenant_perimeter_generation holds one counter that every change to tenant_perimeter bumps,
-- through a trigger so that no write path can forget it, a tenant's cascading deletion included
-- (referential actions fire row triggers). Each replica reads it every refresh interval and
-- reloads the settings only when it moved.
-- +goose Up
CREATE TABLE tenant_perimeter (
    tenant_id          text COLLATE "C" PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    require_signatures boolean NOT NULL,
    gateway_origins    text[] NOT NULL,
    version            bigint NOT NULL CHECK (version >= 1),
    updated_at         timestamptz NOT NULL
);

CREATE TABLE tenant_perimeter_generation (
    id         integer PRIMARY KEY CHECK (id = 1),
    generation bigint NOT NULL
);
INSERT INTO tenant_perimeter_generation (id, generation) VALUES (1, 0);

-- +goose StatementBegin
CREATE FUNCTION tenant_perimeter_bump_generation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE tenant_perimeter_generation SET generation = generation + 1 WHERE id = 1;
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

CREATE TRIGGER tenant_perimeter_changed AFTER INSERT OR UPDATE OR DELETE ON tenant_perimeter
    FOR EACH ROW EXECUTE FUNCTION tenant_perimeter_bump_generation();

-- +goose Down
DROP TABLE tenant_perimeter_generation;
DROP TABLE tenant_perimeter;
DROP FUNCTION tenant_perimeter_bump_generation();
