-- Routing tables (internal/routing): per tenant and capability, the targets calls go to (a JSON
-- array of {agent_id | version, weight, priority} in matching order; jsonb keeps array order) and
-- the capability's call settings. A route goes with its tenant (ON DELETE CASCADE); a target
-- naming an agent that is gone simply matches nothing, so there is no foreign key to agents.
-- hedge_delay_ms and hedge_max_extra are both NULL (no hedging) or both set. Keys collate as bytes
-- ("C"), so that listing order and cursors agree with Go's string order.
--
-- Replicas follow changes through a short cache TTL rather than a generation counter: a route is
-- read by its key on every invocation's cache miss, which the primary key serves; ListRoutes pages
-- one tenant through the same key.
-- +goose Up
CREATE TABLE routes (
    tenant_id       text COLLATE "C" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    capability      text COLLATE "C" NOT NULL,
    targets         jsonb NOT NULL CHECK (jsonb_typeof(targets) = 'array'),
    sticky_header   text NOT NULL,
    timeout_ms      integer NOT NULL CHECK (timeout_ms >= 0),
    retryable       boolean NOT NULL,
    hedge_delay_ms  integer CHECK (hedge_delay_ms >= 1),
    hedge_max_extra integer CHECK (hedge_max_extra >= 1),
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    revision        bigint NOT NULL CHECK (revision >= 1),
    PRIMARY KEY (tenant_id, capability),
    CHECK ((hedge_delay_ms IS NULL) = (hedge_max_extra IS NULL))
);

-- +goose Down
DROP TABLE routes;
