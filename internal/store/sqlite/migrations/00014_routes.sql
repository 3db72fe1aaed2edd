-- Routing tables (internal/routing): per tenant and capability, the targets calls go to (a JSON
-- array of {agent_id | version, weight, priority} in matching order) and the capability's call
-- settings. A route goes with its tenant (ON DELETE CASCADE); a target naming an agent that is
-- gone simply matches nothing, so there is no foreign key to agents. hedge_delay_ms and
-- hedge_max_extra are both NULL (no hedging) or both set. Times are RFC 3339 UTC text with a fixed
-- nine-digit fraction.
--
-- Replicas follow changes through a short cache TTL rather than a generation counter: a route is
-- read by its key on every invocation's cache miss, which the primary key serves; ListRoutes pages
-- one tenant through the same key, in byte order of capability (BINARY collation).
-- +goose Up
CREATE TABLE routes (
    tenant_id       TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    capability      TEXT NOT NULL,
    targets         TEXT NOT NULL CHECK (json_valid(targets) AND json_type(targets) = 'array'),
    sticky_header   TEXT NOT NULL,
    timeout_ms      INTEGER NOT NULL CHECK (timeout_ms >= 0),
    retryable       INTEGER NOT NULL CHECK (retryable IN (0, 1)),
    hedge_delay_ms  INTEGER CHECK (hedge_delay_ms >= 1),
    hedge_max_extra INTEGER CHECK (hedge_max_extra >= 1),
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    revision        INTEGER NOT NULL CHECK (revision >= 1),
    PRIMARY KEY (tenant_id, capability),
    CHECK ((hedge_delay_ms IS NULL) = (hedge_max_extra IS NULL))
) STRICT;

-- +goose Down
DROP TABLE routes;
