-- The built-in CA of workload identity (internal/identity), per trust domain: identity_cas holds
-- its sequence, identity_authorities its roots and intermediates. A private key is stored only
-- sealed (AES-256-GCM under the key-encryption key of signing.kek_file, bound to the authority's
-- id); the database alone holds no usable key. Authorities are added, never changed: a rotation
-- adds one, and moves the sequence from n to n+1 in the same transaction with a compare-and-set
-- UPDATE (creation: an INSERT that finds the row taken), so of replicas changing the CA at once
-- one wins and the others reload. Times are RFC 3339 UTC text with a fixed nine-digit fraction.
-- +goose Up
CREATE TABLE identity_cas (
    trust_domain TEXT PRIMARY KEY,
    sequence     INTEGER NOT NULL CHECK (sequence >= 1),
    updated_at   TEXT NOT NULL
) STRICT;

CREATE TABLE identity_authorities (
    id           TEXT PRIMARY KEY,
    trust_domain TEXT NOT NULL REFERENCES identity_cas (trust_domain) ON DELETE CASCADE,
    kind         TEXT NOT NULL CHECK (kind IN ('root', 'intermediate')),
    parent_id    TEXT REFERENCES identity_authorities (id),
    cert_der     BLOB NOT NULL,
    sealed_key   BLOB NOT NULL,
    not_after    TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    CHECK ((kind = 'root') = (parent_id IS NULL))
) STRICT;

CREATE INDEX identity_authorities_domain ON identity_authorities (trust_domain, created_at, id);

-- +goose Down
DROP TABLE identity_authorities;
DROP TABLE identity_cas;
