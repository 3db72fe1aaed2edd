-- Transactional outbox (internal/events): each event is inserted in the transaction of the change
-- it describes and read back by the bus relay. seq is assigned at insert, not at commit, so
-- concurrent transactions can commit their rows out of seq order: the relay reads every pending
-- row (see outbox.go), never "seq > the last one seen". payload is the serialized CloudEvent byte
-- for byte (bytea, not jsonb, which would reorder members and drop duplicates).
-- +goose Up
CREATE TABLE outbox (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id           text NOT NULL CONSTRAINT outbox_id_key UNIQUE,
    tenant       text NOT NULL,
    type         text NOT NULL,
    subject      text NOT NULL,
    payload      bytea NOT NULL,
    created_at   timestamptz NOT NULL,
    published_at timestamptz,
    attempts     integer NOT NULL DEFAULT 0 CHECK (attempts >= 0)
);

-- The relay reads the pending records in seq order: this index holds only them, so it stays as
-- small as the backlog however many published records wait to be purged.
CREATE INDEX outbox_pending ON outbox (seq) WHERE published_at IS NULL;

-- The purge deletes published records by age without scanning the pending ones.
CREATE INDEX outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;

-- +goose Down
DROP TABLE outbox;
