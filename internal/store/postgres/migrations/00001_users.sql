-- Users: the kernel's human principals (internal/user).
-- +goose Up
CREATE TABLE users (
    id            text PRIMARY KEY,
    username      text NOT NULL CONSTRAINT users_username_key UNIQUE,
    password_hash bytea NOT NULL,
    roles         jsonb NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(roles) = 'array'),
    tenant_id     text,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);

-- +goose Down
DROP TABLE users;
