-- The verifiable audit log (internal/audit): one RFC 6962 Merkle tree per tenant, plus the global
-- tree. audit_records.canonical is the record, the bytes hashed into its leaf; the columns after
-- it are copies of some of its fields, kept only so that listings can filter, and never trusted
-- (audit.Verify reads canonical alone). audit_hashes holds the tlog stored hashes of each tree,
-- audit_trees the size of each tree, kept apart from the records so that deleting records does not
-- shrink it, and audit_checkpoints the signed tree heads. No foreign keys: audit.Verify must be
-- able to read, and report, a database where an attacker has removed any row.
-- +goose Up
CREATE TABLE audit_trees (
    tree TEXT NOT NULL PRIMARY KEY,
    size INTEGER NOT NULL CHECK (size >= 0)
) STRICT;

-- A rowid table: a row (about 500 bytes) is too large for WITHOUT ROWID to pay off, and the
-- secondary indexes then point at an 8-byte rowid rather than at (tree, seq).
CREATE TABLE audit_records (
    tree      TEXT NOT NULL,
    seq       INTEGER NOT NULL CHECK (seq >= 0),
    canonical BLOB NOT NULL,
    time      TEXT NOT NULL, -- RFC 3339 UTC, fixed nine-digit fraction, microsecond precision
    action    TEXT NOT NULL,
    principal TEXT NOT NULL,
    allowed   INTEGER NOT NULL CHECK (allowed IN (0, 1)),
    PRIMARY KEY (tree, seq)
) STRICT;

-- Listings filter a tree by action, by principal, by time, or for denials, and page by seq.
CREATE INDEX audit_records_action ON audit_records (tree, action, seq);
CREATE INDEX audit_records_principal ON audit_records (tree, principal, seq);
CREATE INDEX audit_records_time ON audit_records (tree, time);
-- Denials are few and the ones auditors look for; a partial index keeps them cheap to list.
CREATE INDEX audit_records_denied ON audit_records (tree, seq) WHERE allowed = 0;

CREATE TABLE audit_hashes (
    tree TEXT NOT NULL,
    idx  INTEGER NOT NULL CHECK (idx >= 0), -- tlog.StoredHashIndex
    hash BLOB NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (tree, idx)
) STRICT, WITHOUT ROWID;

CREATE TABLE audit_checkpoints (
    tree       TEXT NOT NULL,
    size       INTEGER NOT NULL CHECK (size >= 0),
    hash       BLOB NOT NULL CHECK (length(hash) = 32),
    note       BLOB NOT NULL, -- the signed note as published (C2SP tlog-checkpoint)
    created_at TEXT NOT NULL,
    PRIMARY KEY (tree, size)
) STRICT;

-- +goose Down
DROP TABLE audit_checkpoints;
DROP TABLE audit_hashes;
DROP TABLE audit_records;
DROP TABLE audit_trees;
