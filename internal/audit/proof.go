package audit

import (
	"context"
	"fmt"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/nops-kernel/nops/internal/errs"
)

// maxProofLen bounds proofs accepted from outside: a tree of 2^63 leaves needs at most 2·63
// hashes for a consistency proof and 63 for an inclusion proof.
const maxProofLen = 128

// InclusionProof returns the proof that record seq is in the tree of size size (an RFC 6962
// audit path), read from the stored hashes. size is normally that of a published checkpoint.
// 0 <= seq < size <= the tree size, or errs.Invalid.
func InclusionProof(ctx context.Context, r TreeReader, tree string, seq, size int64) (tlog.RecordProof, error) {
	if err := checkProofRange(ctx, r, tree, "size", size); err != nil {
		return nil, err
	}
	if seq < 0 {
		return nil, errs.Field("seq", "must not be negative")
	}
	if seq >= size {
		return nil, errs.Field("seq", fmt.Sprintf("must be less than size %d", size))
	}
	p, err := tlog.ProveRecord(size, seq, hashReader(ctx, r, tree))
	if err != nil {
		return nil, fmt.Errorf("audit tree %s inclusion proof of %d in %d: %w", tree, seq, size, err)
	}
	return p, nil
}

// ConsistencyProof returns the proof that the tree of size from is a prefix of the tree of size
// to (an RFC 6962 consistency proof), read from the stored hashes; empty when from == to.
// 1 <= from <= to <= the tree size, or errs.Invalid.
func ConsistencyProof(ctx context.Context, r TreeReader, tree string, from, to int64) (tlog.TreeProof, error) {
	if from < 1 {
		return nil, errs.Field("from", "must be at least 1")
	}
	if from > to {
		return nil, errs.Field("from", fmt.Sprintf("must not be greater than to (%d)", to))
	}
	if err := checkProofRange(ctx, r, tree, "to", to); err != nil {
		return nil, err
	}
	p, err := tlog.ProveTree(to, from, hashReader(ctx, r, tree))
	if err != nil {
		return nil, fmt.Errorf("audit tree %s consistency proof from %d to %d: %w", tree, from, to, err)
	}
	return p, nil
}

// checkProofRange checks 1 <= size <= the tree size, naming field in its errs.Invalid error.
func checkProofRange(ctx context.Context, r TreeReader, tree, field string, size int64) error {
	if !ValidTree(tree) {
		return errs.Field("tree", "must be 1 to 128 ASCII letters, digits, '_' or '-'")
	}
	if size < 1 {
		return errs.Field(field, "must be at least 1")
	}
	n, err := r.TreeSize(ctx, tree)
	if err != nil {
		return fmt.Errorf("audit tree %s size: %w", tree, err)
	}
	if size > n {
		return errs.Field(field, fmt.Sprintf("must not exceed the tree size %d", n))
	}
	return nil
}

// CheckInclusion verifies, with no access to the kernel, that canonicalRecord is record seq of
// the tree whose checkpoint signedCheckpoint is signed by verifierKey: the checkpoint verifies,
// the record is in canonical form, names seq and the checkpoint's tree, seq is below the
// checkpoint size, and proof leads from the record's leaf hash to the signed root. Any failure
// is an errs.Invalid error saying which.
func CheckInclusion(canonicalRecord []byte, proof tlog.RecordProof, seq int64, signedCheckpoint []byte, verifierKey string) error {
	vs, err := verifiersOf(verifierKey)
	if err != nil {
		return err
	}
	cp, err := OpenCheckpoint(signedCheckpoint, vs)
	if err != nil {
		return err
	}
	rec, err := ParseCanonical(canonicalRecord)
	if err != nil {
		return err
	}
	if rec.Seq != seq {
		return errs.New(errs.Invalid, "record says seq %d, proof is for seq %d", rec.Seq, seq)
	}
	if rec.Tree != cp.Tree {
		return errs.New(errs.Invalid, "record is of tree %s, checkpoint of tree %s", rec.Tree, cp.Tree)
	}
	if seq >= cp.Size {
		return errs.New(errs.Invalid, "record %d is not covered by a checkpoint of size %d", seq, cp.Size)
	}
	if len(proof) > maxProofLen {
		return errs.New(errs.Invalid, "inclusion proof has %d hashes, more than %d", len(proof), maxProofLen)
	}
	if err := tlog.CheckRecord(proof, cp.Size, cp.Hash, seq, tlog.RecordHash(canonicalRecord)); err != nil {
		return errs.Wrap(errs.Invalid, err, "record %d is not in the tree of size %d signed by the checkpoint", seq, cp.Size)
	}
	return nil
}

// CheckConsistency verifies, with no access to the kernel, that the tree of newCheckpoint extends
// the tree of oldCheckpoint: both verify with verifierKey, have the same origin, the old size is
// not larger, and proof is a valid consistency proof between them (for equal sizes, the roots
// must be equal and the proof empty). Any failure is an errs.Invalid error saying which.
func CheckConsistency(oldCheckpoint, newCheckpoint []byte, proof tlog.TreeProof, verifierKey string) error {
	vs, err := verifiersOf(verifierKey)
	if err != nil {
		return err
	}
	older, err := OpenCheckpoint(oldCheckpoint, vs)
	if err != nil {
		return fmt.Errorf("old checkpoint: %w", err)
	}
	newer, err := OpenCheckpoint(newCheckpoint, vs)
	if err != nil {
		return fmt.Errorf("new checkpoint: %w", err)
	}
	if older.Tree != newer.Tree {
		return errs.New(errs.Invalid, "checkpoints are of different trees (%s, %s)", older.Tree, newer.Tree)
	}
	if older.Size > newer.Size {
		return errs.New(errs.Invalid, "old checkpoint size %d is larger than new checkpoint size %d", older.Size, newer.Size)
	}
	if len(proof) > maxProofLen {
		return errs.New(errs.Invalid, "consistency proof has %d hashes, more than %d", len(proof), maxProofLen)
	}
	if older.Size == newer.Size {
		if older.Hash != newer.Hash || len(proof) != 0 {
			return errs.New(errs.Invalid, "checkpoints of the same size %d disagree", older.Size)
		}
		return nil
	}
	if older.Size == 0 {
		if len(proof) != 0 {
			return errs.New(errs.Invalid, "a consistency proof from the empty tree must be empty")
		}
		return nil
	}
	if err := tlog.CheckTree(proof, newer.Size, newer.Hash, older.Size, older.Hash); err != nil {
		return errs.Wrap(errs.Invalid, err, "the tree of size %d does not extend the tree of size %d", newer.Size, older.Size)
	}
	return nil
}

// verifiersOf parses an encoded note verifier key.
func verifiersOf(verifierKey string) (note.Verifiers, error) {
	v, err := note.NewVerifier(verifierKey)
	if err != nil {
		return nil, errs.Wrap(errs.Invalid, err, "malformed verifier key")
	}
	return note.VerifierList(v), nil
}
