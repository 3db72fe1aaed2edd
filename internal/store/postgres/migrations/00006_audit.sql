-- The verifiable audit log (internal/audit): one RFC 6962 Merkle tree per tenant, plus the global
-- tree. audit_records.canonical is the record, the bytes hashed into its leaf; the columns after
-- it are copies of some of its fields, kept only so that listings can filter, and never trusted
-- (audit.Verify reads canonical alone). audit_hashes holds the tlog stored hashes of each tree,
-- audit_trees the size of each tree, kept apart from the records so that deleting records does not
-- shrink it (its row is also the lock that serialises appends to a tree), and audit_checkpoints
-- the signed tree heads. No foreign keys: audit.Verify must be able to read, and report, a database
-- where an attacker has removed any row. Tree names are ASCII and collate as bytes ("C"), as in
-- SQLite and in Go's sort order.
-- +goose Up
CREATE TABLE audit_trees (
    tree text COLLATE "C" PRIMARY KEY,
    size bigint NOT NULL CHECK (size >= 0)
);

CREATE TABLE audit_records (
    tree      text COLLATE "C" NOT NULL,
    seq       bigint NOT NULL CHECK (seq >= 0),
    canonical bytea NOT NULL,
    time      timestamptz NOT NULL,
    action    text NOT NULL,
    principal text NOT NULL,
    allowed   boolean NOT NULL,
    PRIMARY KEY (tree, seq)
);

-- Listings filter a tree by action, by principal, by time, or for denials, and page by seq.
CREATE INDEX audit_records_action ON audit_records (tree, action, seq);
CREATE INDEX audit_records_principal ON audit_records (tree, principal, seq);
CREATE INDEX audit_records_time ON audit_records (tree, time);
-- Denials are few and the ones auditors look for; a partial index keeps them cheap to list.
CREATE INDEX audit_records_denied ON audit_records (tree, seq) WHERE NOT allowed;

CREATE TABLE audit_hashes (
    tree text COLLATE "C" NOT NULL,
    idx  bigint NOT NULL CHECK (idx >= 0), -- tlog.StoredHashIndex
    hash bytea NOT NULL CHECK (octet_length(hash) = 32),
    PRIMARY KEY (tree, idx)
);

CREATE TABLE audit_checkpoints (
    tree       text COLLATE "C" NOT NULL,
    size       bigint NOT NULL CHECK (size >= 0),
    hash       bytea NOT NULL CHECK (octet_length(hash) = 32),
    note       bytea NOT NULL, -- the signed note as published (C2SP tlog-checkpoint)
    created_at timestamptz NOT NULL,
    PRIMARY KEY (tree, size)
);

-- +goose Down
DROP TABLE audit_checkpoints;
DROP TABLE audit_hashes;
DROP TABLE audit_records;
DROP TABLE audit_trees;
