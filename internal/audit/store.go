package audit

import (
	"context"

	"golang.org/x/mod/sumdb/tlog"
)

// TreeReader reads the shape of a tree: its size and its stored hashes. Proofs need nothing more.
type TreeReader interface {
	// TreeSize returns the number of records appended to tree, as kept in the tree's head (for
	// example audit_trees.size), not by counting records: a deleted record must not shrink it.
	// A tree never written has size 0.
	TreeSize(ctx context.Context, tree string) (int64, error)
	// ReadHashes returns the hashes of tree stored at the given tlog stored-hash indexes (see
	// tlog.StoredHashIndex), in the order asked; indexes may be empty. An index with no stored
	// hash is an errs.NotFound error.
	ReadHashes(ctx context.Context, tree string, indexes []int64) ([]tlog.Hash, error)
}

// Appender is what Append needs. An adapter implements it on the transaction of the change
// being audited, so the record commits or rolls back with that change.
type Appender interface {
	TreeReader
	// AppendRecord stores rec with its canonical encoding (the adapter may keep other columns
	// derived from rec for queries, but canonical is the record), stores hashes[i] at stored-hash
	// index tlog.StoredHashIndex(0, rec.Seq)+i, and sets the tree size to rec.Seq+1. A record
	// already stored at (rec.Tree, rec.Seq) is an errs.Conflict. The caller has serialised
	// appends to rec.Tree (see the package documentation).
	AppendRecord(ctx context.Context, rec Record, canonical []byte, hashes []tlog.Hash) error
}

// Store is everything the audit log keeps: records, hashes and checkpoints. Verify reads all of
// it as untrusted.
type Store interface {
	Appender
	// Records returns the stored rows of tree with from <= seq < to, ordered by seq (rows that
	// share a seq, which a primary key forbids but an attacker may not, in any order), at most
	// limit of them (limit >= 1). The rows are returned as stored, not parsed or checked.
	Records(ctx context.Context, tree string, from, to int64, limit int) ([]Entry, error)
	// Trees returns every tree that has a head, a record or a checkpoint, sorted.
	Trees(ctx context.Context) ([]string, error)
	// SaveCheckpoint stores cp. Saving a checkpoint whose tree and size are already stored is
	// not an error (replicas may sign the same size; Ed25519 makes their notes identical).
	SaveCheckpoint(ctx context.Context, cp Checkpoint) error
	// LatestCheckpoint returns the stored checkpoint of tree with the largest size; false when
	// there is none.
	LatestCheckpoint(ctx context.Context, tree string) (Checkpoint, bool, error)
}

// Entry is one stored record row: the seq column and the canonical encoding, as stored.
type Entry struct {
	Seq       int64
	Canonical []byte
}

// Record parses the entry's canonical encoding.
func (e Entry) Record() (Record, error) { return ParseCanonical(e.Canonical) }

// Checkpoint is a signed tree head. Note is the signed note as published (C2SP tlog-checkpoint);
// Tree, Size and Hash repeat its body for queries and are checked against it by Verify.
type Checkpoint struct {
	Tree string
	Size int64
	Hash tlog.Hash
	Note []byte
}

// hashReader adapts a TreeReader on one tree to tlog.HashReader, whose methods take no context.
func hashReader(ctx context.Context, r TreeReader, tree string) tlog.HashReader {
	return tlog.HashReaderFunc(func(indexes []int64) ([]tlog.Hash, error) {
		return r.ReadHashes(ctx, tree, indexes)
	})
}
