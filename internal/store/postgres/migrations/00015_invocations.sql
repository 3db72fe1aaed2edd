-- Async invocations (internal/invoke): the request a caller submitted with Prefer: respond-async,
-- the state of its run and its result, kept until expires_at (invoke.result_ttl after creation,
-- and again after completion). An invocation goes with its tenant (ON DELETE CASCADE).
--
-- status moves pending → running → completed | failed, each step one compare-and-set UPDATE:
-- a claim takes a pending row, or a running one whose lease_until has passed (its worker died),
-- adding one to attempts; under READ COMMITTED a second claimer waits on the first's row lock and
-- re-checks the condition against the committed row, so of concurrent claims one wins. A result
-- is stored only where attempts is still the claim's count, so a run that outlived its lease
-- cannot overwrite its successor's. lease_until is also set on a pending row (when the sweeper
-- may run it without its event) and NULL once finished, so the partial index on it lists exactly
-- the sweeper's candidates. idempotency_key is unique per tenant while the row is kept.
-- +goose Up
CREATE TABLE invocations (
    id                    text PRIMARY KEY,
    tenant_id             text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    capability            text NOT NULL,
    status                text NOT NULL CHECK (status IN ('pending', 'running', 'completed', 'failed')),
    request_body          bytea NOT NULL,
    request_content_type  text NOT NULL,
    request_id            text NOT NULL,
    idempotency_key       text,
    created_at            timestamptz NOT NULL,
    started_at            timestamptz,
    completed_at          timestamptz,
    lease_until           timestamptz,
    attempts              integer NOT NULL CHECK (attempts >= 0),
    agent_id              text NOT NULL,
    response_status       integer NOT NULL CHECK (response_status = 0 OR response_status BETWEEN 100 AND 599),
    response_content_type text NOT NULL,
    response_body         bytea,
    error_status          integer NOT NULL CHECK (error_status = 0 OR error_status BETWEEN 100 AND 599),
    error_detail          text NOT NULL,
    expires_at            timestamptz NOT NULL,
    CHECK ((status IN ('completed', 'failed')) = (lease_until IS NULL))
);

CREATE UNIQUE INDEX invocations_idempotency ON invocations (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX invocations_lease ON invocations (lease_until) WHERE lease_until IS NOT NULL;
CREATE INDEX invocations_expiry ON invocations (expires_at);
-- The tenant's ON DELETE CASCADE finds the tenant's rows through an index.
CREATE INDEX invocations_tenant ON invocations (tenant_id);

-- +goose Down
DROP TABLE invocations;
