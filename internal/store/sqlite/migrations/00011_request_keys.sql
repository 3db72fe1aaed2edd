-- Request-signing keys (internal/reqsig, RFC 9421) and the nonces of accepted signatures.
--
-- A key belongs to a tenant and goes with it; a key bound to an agent names it within the key's
-- own tenant and goes with the agent (as api_keys). Its material is, as its algorithm says, an
-- Ed25519 public key (32 bytes) or an HMAC secret sealed with AES-256-GCM under the kernel's
-- key-encryption key (internal/sealbox; never the plaintext). prev_* hold what the last rotation
-- replaced, accepted until prev_valid_until; generation counts rotations and makes rotation a
-- compare-and-set. NULL times mean "none". Times are RFC 3339 UTC text with a fixed nine-digit
-- fraction, so text order is time order.
--
-- request_nonces holds one row per accepted (key_id, nonce) until expires_at (the signature's
-- created plus the allowed clock skew): a second request with the same nonce is refused while
-- the row lives. It has no foreign key: verification may use keys from elsewhere (tests), and
-- rows die on their own. Dead rows are purged in batches by rowid through the expires_at index.
-- +goose Up
CREATE TABLE request_keys (
    id                 TEXT NOT NULL PRIMARY KEY,
    tenant_id          TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    agent_id           TEXT,
    name               TEXT NOT NULL,
    alg                TEXT NOT NULL CHECK (alg IN ('hmac-sha256', 'ed25519')),
    created_by         TEXT NOT NULL,
    public_key         BLOB CHECK (public_key IS NULL OR length(public_key) = 32),
    sealed_secret      BLOB,
    prev_public_key    BLOB CHECK (prev_public_key IS NULL OR length(prev_public_key) = 32),
    prev_sealed_secret BLOB,
    prev_valid_until   TEXT,
    generation         INTEGER NOT NULL CHECK (generation >= 1),
    created_at         TEXT NOT NULL,
    expires_at         TEXT,
    revoked_at         TEXT,
    CHECK ((alg = 'ed25519') = (public_key IS NOT NULL)),
    CHECK ((alg = 'hmac-sha256') = (sealed_secret IS NOT NULL)),
    FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id) ON DELETE CASCADE
) STRICT;

-- ListRequestKeys pages one tenant by id.
CREATE INDEX request_keys_tenant ON request_keys (tenant_id, id);
-- Deleting an agent finds its keys through this index rather than scanning its tenant's.
CREATE INDEX request_keys_agent ON request_keys (tenant_id, agent_id);

CREATE TABLE request_nonces (
    key_id     TEXT NOT NULL,
    nonce      TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    PRIMARY KEY (key_id, nonce)
) STRICT;

-- The purge deletes dead rows by expiry.
CREATE INDEX request_nonces_expires ON request_nonces (expires_at);

-- +goose Down
DROP TABLE request_nonces;
DROP TABLE request_keys;
