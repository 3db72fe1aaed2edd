-- Idempotency-Key records of the API (internal/idempotency): one row per scope (the caller's
-- tenant, or 'global', and the caller's subject) and key. A row is in flight while its attempt
-- runs (token names that attempt; locked_until is when a retry may take it over) and completed
-- once its response is stored (status, header as a JSON object of value lists, body byte for
-- byte: bytea, not a JSON type). Rows whose expires_at has passed are dead and purged in batches.
-- +goose Up
CREATE TABLE idempotency_keys (
    tenant       text NOT NULL,
    principal    text NOT NULL,
    idem_key     text NOT NULL,
    fingerprint  bytea NOT NULL CHECK (octet_length(fingerprint) = 32),
    token        text NOT NULL,
    state        text NOT NULL CHECK (state IN ('in_flight', 'completed')),
    created_at   timestamptz NOT NULL,
    locked_until timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    status       integer,
    header       text,
    body         bytea,
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (tenant, principal, idem_key),
    CHECK ((state = 'completed') = (status IS NOT NULL))
);

-- The purge deletes dead rows by expiry.
CREATE INDEX idempotency_keys_expires ON idempotency_keys (expires_at);

-- +goose Down
DROP TABLE idempotency_keys;
