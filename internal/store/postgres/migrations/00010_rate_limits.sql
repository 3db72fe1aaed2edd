-- Rate-limit overrides of the admin API (internal/ratelimit): one row per kind and target, which
-- replaces one rule for that target (the per-IP rule for a CIDR prefix, the per-tenant rule for a
-- tenant ID, the route-class rule for a route pattern). rate_limit 0 means unlimited. A tenant
-- target is not a foreign key: an override outliving its tenant matches nothing. Texts collate as
-- bytes ("C"), so the listing order agrees with Go's string order whatever the database's locale.
-- +goose Up
CREATE TABLE rate_limit_overrides (
    id         text COLLATE "C" PRIMARY KEY,
    kind       text COLLATE "C" NOT NULL CHECK (kind IN ('cidr', 'tenant', 'route')),
    target     text COLLATE "C" NOT NULL,
    rate_limit integer NOT NULL CHECK (rate_limit >= 0),
    period_ms  bigint NOT NULL CHECK (period_ms BETWEEN 1000 AND 86400000),
    burst      integer NOT NULL CHECK (burst >= 0),
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    CONSTRAINT rate_limit_overrides_target_key UNIQUE (kind, target)
);

-- +goose Down
DROP TABLE rate_limit_overrides;
