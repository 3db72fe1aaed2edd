-- Feature flags (internal/flags): global kernel objects managed by SUPER_ADMIN, evaluated per
-- tenant through ordered CEL rules. variants is the JSON array of the flag's variant names
-- (["false","true"] for a boolean flag); rules the JSON array of {expression, variant} in
-- matching order (jsonb keeps array order). Keys collate as bytes ("C"), so that listing order
-- and cursors agree with Go's string order.
--
-- Every replica keeps all flags in memory and reloads them whole (in key order, through the
-- primary key) on a nops.flag.changed.v1 event and every flags.refresh_interval.
-- +goose Up
CREATE TABLE feature_flags (
    key             text COLLATE "C" NOT NULL PRIMARY KEY,
    type            text NOT NULL CHECK (type IN ('boolean', 'variant')),
    description     text NOT NULL,
    variants        jsonb NOT NULL CHECK (jsonb_typeof(variants) = 'array'),
    default_variant text NOT NULL,
    enabled         boolean NOT NULL,
    rules           jsonb NOT NULL CHECK (jsonb_typeof(rules) = 'array'),
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    revision        bigint NOT NULL CHECK (revision >= 1)
);

-- +goose Down
DROP TABLE feature_flags;
