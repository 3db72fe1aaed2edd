-- Per-tenant perimeter settings (internal/perimeter): whether the tenant's requests must be
-- signed (RFC 9421), and the networks its gateway traffic may come from (gateway_origins, a JSON
-- array of canonical CIDR prefixes, sorted). One row per tenant that set them; a tenant without a
-- row has the defaults. The row goes with its tenant (ON DELETE CASCADE). Times are RFC 3339 UTC
-- text with a fixed nine-digit fraction.
--
-- tenant_perimeter_generation holds one counter that every change to tenant_perimeter bumps,
-- through triggers so that no write path can forget it, a tenant's cascading deletion included.
-- Each replica reads it every refresh interval and reloads the settings only when it moved.
-- +goose Up
CREATE TABLE tenant_perimeter (
    tenant_id          TEXT NOT NULL PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    require_signatures INTEGER NOT NULL CHECK (require_signatures IN (0, 1)),
    gateway_origins    TEXT NOT NULL CHECK (json_valid(gateway_origins) AND json_type(gateway_origins) = 'array'),
    version            INTEGER NOT NULL CHECK (version >= 1),
    updated_at         TEXT NOT NULL
) STRICT;

CREATE TABLE tenant_perimeter_generation (
    id         INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    generation INTEGER NOT NULL
) STRICT;
INSERT INTO tenant_perimeter_generation (id, generation) VALUES (1, 0);

-- +goose StatementBegin
CREATE TRIGGER tenant_perimeter_inserted AFTER INSERT ON tenant_perimeter
BEGIN
    UPDATE tenant_perimeter_generation SET generation = generation + 1 WHERE id = 1;
END;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE TRIGGER tenant_perimeter_updated AFTER UPDATE ON tenant_perimeter
BEGIN
    UPDATE tenant_perimeter_generation SET generation = generation + 1 WHERE id = 1;
END;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE TRIGGER tenant_perimeter_deleted AFTER DELETE ON tenant_perimeter
BEGIN
    UPDATE tenant_perimeter_generation SET generation = generation + 1 WHERE id = 1;
END;
-- +goose StatementEnd

-- +goose Down
DROP TABLE tenant_perimeter_generation;
DROP TABLE tenant_perimeter;
