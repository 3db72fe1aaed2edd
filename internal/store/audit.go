package store

import (
	"bytes"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/nops-kernel/nops/internal/audit"
	"github.com/nops-kernel/nops/internal/errs"
)

// The checks both adapters apply to the audit log's rows, kept here so they stay one.

// OrderAuditHashes lists found in the order of indexes.
func OrderAuditHashes(tree string, indexes []int64, found map[int64]tlog.Hash) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, idx := range indexes {
		h, ok := found[idx]
		if !ok {
			return nil, errs.New(errs.NotFound, "audit hash %d of tree %s not found", idx, tree)
		}
		out[i] = h
	}
	return out, nil
}

// CheckAuditAppend refuses what audit.Append never passes: a canonical encoding that is not rec's
// (the filter columns, taken from rec, would then describe another record) or the wrong number
// of hashes (the tree would have holes or stray hashes).
func CheckAuditAppend(rec audit.Record, canonical []byte, hashes []tlog.Hash) error {
	if rec.Seq < 0 {
		return errs.New(errs.Internal, "audit record %s/%d: negative seq", rec.Tree, rec.Seq)
	}
	if !bytes.Equal(rec.Canonical(), canonical) {
		return errs.New(errs.Internal, "audit record %s/%d: canonical encoding does not match the record", rec.Tree, rec.Seq)
	}
	if want := tlog.StoredHashCount(rec.Seq+1) - tlog.StoredHashCount(rec.Seq); int64(len(hashes)) != want {
		return errs.New(errs.Internal, "audit record %s/%d: %d hashes, want %d", rec.Tree, rec.Seq, len(hashes), want)
	}
	return nil
}
