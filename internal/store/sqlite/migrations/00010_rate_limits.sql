-- Rate-limit overrides of the admin API (internal/ratelimit): one row per kind and target, which
-- replaces one rule for that target (the per-IP rule for a CIDR prefix, the per-tenant rule for a
-- tenant ID, the route-class rule for a route pattern). rate_limit 0 means unlimited. A tenant
-- target is not a foreign key: an override outliving its tenant matches nothing. Times are RFC
-- 3339 UTC text with a fixed nine-digit fraction. STRICT makes SQLite enforce the column types.
-- +goose Up
CREATE TABLE rate_limit_overrides (
    id         TEXT NOT NULL PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind IN ('cidr', 'tenant', 'route')),
    target     TEXT NOT NULL,
    rate_limit INTEGER NOT NULL CHECK (rate_limit >= 0),
    period_ms  INTEGER NOT NULL CHECK (period_ms BETWEEN 1000 AND 86400000),
    burst      INTEGER NOT NULL CHECK (burst >= 0),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (kind, target)
) STRICT;

-- +goose Down
DROP TABLE rate_limit_overrides;
