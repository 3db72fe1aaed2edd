-- Transactional outbox (internal/events): each event is inserted in the transaction of the change
-- it describes and read back by the bus relay. seq is the rowid; AUTOINCREMENT keeps it from ever
-- being reused after the newest rows are purged, so a record's seq stays unique for its lifetime
-- and in logs. Every write goes through the one writer connection, so seq order is commit order.
-- payload is the serialized CloudEvent byte for byte. Times are RFC 3339 UTC text with a fixed
-- nine-digit fraction, so text order is time order.
-- +goose Up
CREATE TABLE outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    tenant       TEXT NOT NULL,
    type         TEXT NOT NULL,
    subject      TEXT NOT NULL,
    payload      BLOB NOT NULL,
    created_at   TEXT NOT NULL,
    published_at TEXT,
    attempts     INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0)
) STRICT;

-- The relay reads the pending records in seq order: this index holds only them, so the read does
-- not step over the published records waiting to be purged.
CREATE INDEX outbox_pending ON outbox (seq) WHERE published_at IS NULL;

-- The purge deletes published records by age without scanning the pending ones.
CREATE INDEX outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;

-- +goose Down
DROP TABLE outbox;
