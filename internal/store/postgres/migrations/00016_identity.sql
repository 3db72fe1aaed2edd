-- The built-in CA of workload identity (internal/identity), per trust domain: identity_cas holds
-- its sequence, identity_authorities its roots and intermediates. A private key is stored only
-- sealed (AES-256-GCM under the key-encryption key of signing.kek_file, bound to the authority's
-- id); the database alone holds no usable key. Authorities are added, never changed: a rotation
-- adds one and moves the sequence from n to n+1 in the same transaction with a compare-and-set
-- UPDATE, and creation is an INSERT … ON CONFLICT DO NOTHING. Under READ COMMITTED a second
-- writer waits on the first's row (or key) lock and then finds the condition false, so of
-- replicas changing the CA at once one wins and the others reload.
-- +goose Up
CREATE TABLE identity_cas (
    trust_domain text COLLATE "C" PRIMARY KEY,
    sequence     bigint NOT NULL CHECK (sequence >= 1),
    updated_at   timestamptz NOT NULL
);

CREATE TABLE identity_authorities (
    id           text COLLATE "C" PRIMARY KEY,
    trust_domain text COLLATE "C" NOT NULL REFERENCES identity_cas (trust_domain) ON DELETE CASCADE,
    kind         text NOT NULL CHECK (kind IN ('root', 'intermediate')),
    parent_id    text COLLATE "C" REFERENCES identity_authorities (id),
    cert_der     bytea NOT NULL,
    sealed_key   bytea NOT NULL,
    not_after    timestamptz NOT NULL,
    created_at   timestamptz NOT NULL,
    CHECK ((kind = 'root') = (parent_id IS NULL))
);

CREATE INDEX identity_authorities_domain ON identity_authorities (trust_domain, created_at, id);

-- +goose Down
DROP TABLE identity_authorities;
DROP TABLE identity_cas;
