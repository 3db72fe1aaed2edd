-- Request-signing keys (internal/reqsig, RFC 9421) and the nonces of accepted signatures.
--
-- A key belongs to a tenant and goes with it; a key bound to an agent names it within the key's
-- own tenant and goes with the agent (as api_keys). Its material is, as its algorithm says, an
-- Ed25519 public key (32 bytes) or an HMAC secret sealed with AES-256-GCM under the kernel's
-- key-encryption key (internal/sealbox; never the plaintext). prev_* hold what the last rotation
-- replaced, accepted until prev_valid_until; generation counts rotations and makes rotation a
-- compare-and-set. NULL times mean "none". IDs collate as bytes ("C"), so that listing order
-- and cursors agree with Go's string order.
--
-- request_nonces holds one row per accepted (key_id, nonce) until expires_at (the signature's
-- created plus the allowed clock skew): a second request with the same nonce is refused while
-- the row lives, by every replica sharing the database. It has no foreign key: verification may
-- use keys from elsewhere (tests), and rows die on their own. Dead rows are purged in batches
-- through the expires_at index. It is an ordinary (logged, not UNLOGGED) table: a nonce must
-- survive a crash of the database as well as a restart of the kernel.
-- +goose Up
CREATE TABLE request_keys (
    id                 text COLLATE "C" PRIMARY KEY,
    tenant_id          text COLLATE "C" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    agent_id           text COLLATE "C",
    name               text NOT NULL,
    alg                text NOT NULL CHECK (alg IN ('hmac-sha256', 'ed25519')),
    created_by         text NOT NULL,
    public_key         bytea CHECK (public_key IS NULL OR length(public_key) = 32),
    sealed_secret      bytea,
    prev_public_key    bytea CHECK (prev_public_key IS NULL OR length(prev_public_key) = 32),
    prev_sealed_secret bytea,
    prev_valid_until   timestamptz,
    generation         bigint NOT NULL CHECK (generation >= 1),
    created_at         timestamptz NOT NULL,
    expires_at         timestamptz,
    revoked_at         timestamptz,
    CHECK ((alg = 'ed25519') = (public_key IS NOT NULL)),
    CHECK ((alg = 'hmac-sha256') = (sealed_secret IS NOT NULL)),
    FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id) ON DELETE CASCADE
);

-- ListRequestKeys pages one tenant by id.
CREATE INDEX request_keys_tenant ON request_keys (tenant_id, id);
-- Deleting an agent finds its keys through this index rather than scanning its tenant's.
CREATE INDEX request_keys_agent ON request_keys (tenant_id, agent_id);

CREATE TABLE request_nonces (
    key_id     text COLLATE "C" NOT NULL,
    nonce      text COLLATE "C" NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (key_id, nonce)
);

-- The purge deletes dead rows by expiry.
CREATE INDEX request_nonces_expires ON request_nonces (expires_at);

-- +goose Down
DROP TABLE request_nonces;
DROP TABLE request_keys;
