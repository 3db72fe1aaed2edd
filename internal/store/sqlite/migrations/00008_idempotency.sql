-- Idempotency-Key records of the API (internal/idempotency): one row per scope (the caller's
-- tenant, or 'global', and the caller's subject) and key. A row is in flight while its attempt
-- runs (token names that attempt; locked_until is when a retry may take it over) and completed
-- once its response is stored (status, header as a JSON object of value lists, body byte for
-- byte). Rows whose expires_at has passed are dead and purged in batches by rowid. Times are
-- RFC 3339 UTC text with a fixed nine-digit fraction, so text order is time order.
-- +goose Up
CREATE TABLE idempotency_keys (
    tenant       TEXT NOT NULL,
    principal    TEXT NOT NULL,
    idem_key     TEXT NOT NULL,
    fingerprint  BLOB NOT NULL CHECK (length(fingerprint) = 32),
    token        TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('in_flight', 'completed')),
    created_at   TEXT NOT NULL,
    locked_until TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    status       INTEGER,
    header       TEXT,
    body         BLOB,
    PRIMARY KEY (tenant, principal, idem_key),
    CHECK ((state = 'completed') = (status IS NOT NULL))
) STRICT;

-- The purge deletes dead rows by expiry.
CREATE INDEX idempotency_keys_expires ON idempotency_keys (expires_at);

-- +goose Down
DROP TABLE idempotency_keys;
