-- The outbox relay's lease, the consumers' inbox and the event-stats projection (internal/relay,
-- internal/consumers). Times are RFC 3339 UTC text with a fixed nine-digit fraction, so text
-- order (and so < and min/max) is time order.
--
-- leases: one row per named lease (the relay's is "outbox-relay"); a replica holds it until
-- expires_at and renews it before then. Taking it is one INSERT … ON CONFLICT DO UPDATE … WHERE
-- (see leases.go), so two processes sharing the file cannot both win.
--
-- inbox: the events each consumer has applied, claimed in the transaction of the effect, so a
-- redelivered event is applied once. applied_at lets old claims be purged.
--
-- event_stats: the reference consumer's projection, events counted per tenant and type.
-- +goose Up
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at TEXT NOT NULL
) STRICT;

CREATE TABLE inbox (
    consumer   TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    applied_at TEXT NOT NULL,
    PRIMARY KEY (consumer, event_id)
) STRICT, WITHOUT ROWID;

-- The purge deletes claims by age.
CREATE INDEX inbox_applied ON inbox (applied_at);

CREATE TABLE event_stats (
    tenant        TEXT NOT NULL,
    type          TEXT NOT NULL,
    count         INTEGER NOT NULL CHECK (count > 0),
    last_event_at TEXT NOT NULL,
    PRIMARY KEY (tenant, type)
) STRICT, WITHOUT ROWID;

-- +goose Down
DROP TABLE event_stats;
DROP TABLE inbox;
DROP TABLE leases;
