-- Async invocations (internal/invoke): the request a caller submitted with Prefer: respond-async,
-- the state of its run and its result, kept until expires_at (invoke.result_ttl after creation,
-- and again after completion). An invocation goes with its tenant (ON DELETE CASCADE). Times are
-- RFC 3339 UTC text with a fixed nine-digit fraction, so text order (and so <=) is time order.
--
-- status moves pending → running → completed | failed, each step one compare-and-set UPDATE:
-- a claim takes a pending row, or a running one whose lease_until has passed (its worker died),
-- adding one to attempts; a result is stored only where attempts is still the claim's count, so
-- a run that outlived its lease cannot overwrite its successor's. lease_until is also set on a
-- pending row (when the sweeper may run it without its event) and NULL once finished, so the
-- partial index on it lists exactly the sweeper's candidates. idempotency_key is unique per
-- tenant while the row is kept.
-- +goose Up
CREATE TABLE invocations (
    id                    TEXT PRIMARY KEY,
    tenant_id             TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    capability            TEXT NOT NULL,
    status                TEXT NOT NULL CHECK (status IN ('pending', 'running', 'completed', 'failed')),
    request_body          BLOB NOT NULL,
    request_content_type  TEXT NOT NULL,
    request_id            TEXT NOT NULL,
    idempotency_key       TEXT,
    created_at            TEXT NOT NULL,
    started_at            TEXT,
    completed_at          TEXT,
    lease_until           TEXT,
    attempts              INTEGER NOT NULL CHECK (attempts >= 0),
    agent_id              TEXT NOT NULL,
    response_status       INTEGER NOT NULL CHECK (response_status = 0 OR response_status BETWEEN 100 AND 599),
    response_content_type TEXT NOT NULL,
    response_body         BLOB,
    error_status          INTEGER NOT NULL CHECK (error_status = 0 OR error_status BETWEEN 100 AND 599),
    error_detail          TEXT NOT NULL,
    expires_at            TEXT NOT NULL,
    CHECK ((status IN ('completed', 'failed')) = (lease_until IS NULL))
) STRICT;

CREATE UNIQUE INDEX invocations_idempotency ON invocations (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX invocations_lease ON invocations (lease_until) WHERE lease_until IS NOT NULL;
CREATE INDEX invocations_expiry ON invocations (expires_at);
-- The tenant's ON DELETE CASCADE finds the tenant's rows through an index.
CREATE INDEX invocations_tenant ON invocations (tenant_id);

-- +goose Down
DROP TABLE invocations;
