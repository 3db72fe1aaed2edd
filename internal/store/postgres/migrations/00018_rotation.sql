-- Planned rotation of the token signing keys (internal/token) and of the identity CA's root
-- (internal/identity), with an overlap.
--
-- signing_keys: activates_at is when a key starts signing (it is published in the JWKS from its
-- creation); retires_at, set when a newer key of the same algorithm supersedes it, is when it
-- leaves the JWKS and stops verifying (the successor's activation + token TTL + leeway). NULL
-- activates_at (keys stored before this migration) means created_at; NULL retires_at means the
-- key is current. Rotations are serialised by a transaction-scoped advisory lock, so two replicas
-- rotating at once cannot both leave their key current.
--
-- identity_authorities: activates_at is when an intermediate starts issuing (NULL: at once);
-- retires_at is when a root leaves the trust bundle, set on the old roots by a root rotation
-- (NULL: at its expiry).
-- +goose Up
ALTER TABLE signing_keys ADD COLUMN activates_at timestamptz, ADD COLUMN retires_at timestamptz;
ALTER TABLE identity_authorities ADD COLUMN activates_at timestamptz, ADD COLUMN retires_at timestamptz;

-- +goose Down
ALTER TABLE identity_authorities DROP COLUMN retires_at, DROP COLUMN activates_at;
ALTER TABLE signing_keys DROP COLUMN retires_at, DROP COLUMN activates_at;
