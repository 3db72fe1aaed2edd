-- Token signing keys sealed at rest with the key-encryption key (internal/sealbox, signing.kek_file),
-- like the CA's keys and the request-signing secrets (threat model I-07).
--
-- sealed_key is sealbox.Seal(PKCS#8 DER or HS256 secret, token.SealAAD(id)); a sealed row keeps an
-- empty private_key. NULL sealed_key marks a row stored in clear before this migration: the token
-- service seals it in place at its next start (a conditional UPDATE on the clear value, so that
-- replicas starting together seal each row once). A sealbox rewrap re-seals sealed_key under a
-- promoted KEK (kind sealbox.KindSigningKey). The rewrap pages through the table by id, in byte
-- order like every other table of sealed values: id collates "C" from here on.
-- +goose Up
ALTER TABLE signing_keys ADD COLUMN sealed_key bytea;
ALTER TABLE signing_keys ALTER COLUMN id TYPE text COLLATE "C";

-- +goose Down
-- The sealed rows are dropped: an older kernel cannot open them (it would skip them as damaged),
-- and finding no key of its algorithm it generates one at start. Tokens the dropped keys signed
-- stop verifying.
DELETE FROM signing_keys WHERE sealed_key IS NOT NULL;
ALTER TABLE signing_keys ALTER COLUMN id TYPE text COLLATE "default";
ALTER TABLE signing_keys DROP COLUMN sealed_key;
