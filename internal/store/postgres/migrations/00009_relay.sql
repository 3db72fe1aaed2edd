-- The outbox relay's lease, the consumers' inbox and the event-stats projection (internal/relay,
-- internal/consumers).
--
-- leases: one row per named lease (the relay's is "outbox-relay"); a replica holds it until
-- expires_at and renews it before then. Taking it is one INSERT … ON CONFLICT DO UPDATE … WHERE
-- (see leases.go), so two replicas racing for it cannot both win.
--
-- inbox: the events each consumer has applied, claimed in the transaction of the effect, so a
-- redelivered event is applied once. applied_at lets old claims be purged.
--
-- event_stats: the reference consumer's projection, events counted per tenant and type.
-- +goose Up
CREATE TABLE leases (
    name       text PRIMARY KEY,
    holder     text NOT NULL,
    expires_at timestamptz NOT NULL
);

CREATE TABLE inbox (
    consumer   text NOT NULL,
    event_id   text NOT NULL,
    applied_at timestamptz NOT NULL,
    PRIMARY KEY (consumer, event_id)
);

-- The purge deletes claims by age.
CREATE INDEX inbox_applied ON inbox (applied_at);

CREATE TABLE event_stats (
    tenant        text NOT NULL,
    type          text NOT NULL,
    count         bigint NOT NULL CHECK (count > 0),
    last_event_at timestamptz NOT NULL,
    PRIMARY KEY (tenant, type)
);

-- +goose Down
DROP TABLE event_stats;
DROP TABLE inbox;
DROP TABLE leases;
