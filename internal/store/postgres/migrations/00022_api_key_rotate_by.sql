-- A deadline an administrator set for rotating an API key (POST /v1/admin/api-keys/force-rotate):
-- until rotate_by the key's current secret keeps working and every response to a request it
-- authenticates carries Nops-Api-Key-Rotate-By, so its holder (the SDKs do it on their own)
-- rotates it; from rotate_by on, the current secret is refused. A rotation clears it. NULL: none.
-- +goose Up
ALTER TABLE api_keys ADD COLUMN rotate_by timestamptz;

-- +goose Down
ALTER TABLE api_keys DROP COLUMN rotate_by;
