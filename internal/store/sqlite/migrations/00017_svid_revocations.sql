-- Revocations of X.509-SVIDs (internal/identity RevocationStore, read by every replica's mTLS
-- listener through mtls.RevocationStore). A row names a certificate serial (lower-case hex without
-- leading zeros) or a SPIFFE ID, exactly one. tenant_id is the tenant the revoked ID belongs to,
-- NULL for the kernel's IDs and for serials; it has no foreign key on purpose: deleting a tenant
-- must not lift the revocations of its workloads' SVIDs, which stay valid until they expire.
-- expires_at is when the row can no longer match a valid SVID; AddRevocation deletes the rows
-- past it. Times are RFC 3339 UTC text with a fixed nine-digit fraction, so text order is time
-- order.
-- +goose Up
CREATE TABLE svid_revocations (
    id         TEXT NOT NULL PRIMARY KEY,
    serial     TEXT,
    spiffe_id  TEXT,
    tenant_id  TEXT,
    reason     TEXT NOT NULL,
    revoked_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    actor      TEXT NOT NULL,
    CHECK ((serial IS NULL) <> (spiffe_id IS NULL))
) STRICT;

-- Every replica's listener reads what was revoked since its cursor.
CREATE INDEX svid_revocations_revoked ON svid_revocations (revoked_at, id);
-- A tenant's list, in (revoked_at, id) order.
CREATE INDEX svid_revocations_tenant ON svid_revocations (tenant_id, revoked_at, id);
-- The purge deletes dead rows by expiry.
CREATE INDEX svid_revocations_expires ON svid_revocations (expires_at);

-- +goose Down
DROP TABLE svid_revocations;
