-- Users: the kernel's human principals (internal/user). Times are RFC 3339 UTC text with a fixed
-- nine-digit fraction, so text order is time order. STRICT makes SQLite enforce the column types.
-- +goose Up
CREATE TABLE users (
    id            TEXT NOT NULL PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash BLOB NOT NULL,
    roles         TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(roles) AND json_type(roles) = 'array'),
    tenant_id     TEXT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
) STRICT;

-- +goose Down
DROP TABLE users;
