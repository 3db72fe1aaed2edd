-- Token signing keys (internal/token), shared by every replica through this database. private_key
-- is PKCS#8 DER or an HS256 secret, stored in clear: see docs/adr/0001-storage.md.
-- +goose Up
CREATE TABLE signing_keys (
    id          text PRIMARY KEY,
    algorithm   text NOT NULL,
    private_key bytea NOT NULL,
    created_at  timestamptz NOT NULL
);

-- +goose Down
DROP TABLE signing_keys;
