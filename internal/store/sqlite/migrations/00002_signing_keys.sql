-- Token signing keys (internal/token), shared by every process using this database. private_key
-- is PKCS#8 DER or an HS256 secret, stored in clear: see docs/adr/0001-storage.md.
-- +goose Up
CREATE TABLE signing_keys (
    id          TEXT NOT NULL PRIMARY KEY,
    algorithm   TEXT NOT NULL,
    private_key BLOB NOT NULL,
    created_at  TEXT NOT NULL
) STRICT;

-- +goose Down
DROP TABLE signing_keys;
