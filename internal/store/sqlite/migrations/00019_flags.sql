-- Feature flags (internal/flags): global kernel objects managed by SUPER_ADMIN, evaluated per
-- tenant through ordered CEL rules. variants is the JSON array of the flag's variant names
-- (["false","true"] for a boolean flag); rules the JSON array of {expression, variant} in
-- matching order. Times are RFC 3339 UTC text with a fixed nine-digit fraction.
--
-- Every replica keeps all flags in memory and reloads them whole (in key order, through the
-- primary key) on a nops.flag.changed.v1 event and every flags.refresh_interval.
-- +goose Up
CREATE TABLE feature_flags (
    key             TEXT NOT NULL PRIMARY KEY,
    type            TEXT NOT NULL CHECK (type IN ('boolean', 'variant')),
    description     TEXT NOT NULL,
    variants        TEXT NOT NULL CHECK (json_valid(variants) AND json_type(variants) = 'array'),
    default_variant TEXT NOT NULL,
    enabled         INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    rules           TEXT NOT NULL CHECK (json_valid(rules) AND json_type(rules) = 'array'),
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    revision        INTEGER NOT NULL CHECK (revision >= 1)
) STRICT;

-- +goose Down
DROP TABLE feature_flags;
