package audit

import (
	"context"
	"fmt"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/nops-kernel/nops/internal/errs"
)

// Append adds rec to the end of its tree through a, assigning rec.Seq (the current tree size)
// and normalising rec.Time to UTC, and returns the record as stored. rec.Seq is ignored on
// input. The caller must have serialised appends to rec.Tree (see the package documentation).
func Append(ctx context.Context, a Appender, rec Record) (Record, error) {
	rec.Seq = 0
	if err := rec.Validate(); err != nil {
		return Record{}, err
	}
	rec.Time = rec.Time.UTC()
	size, err := a.TreeSize(ctx, rec.Tree)
	if err != nil {
		return Record{}, fmt.Errorf("audit tree %s size: %w", rec.Tree, err)
	}
	if size < 0 {
		return Record{}, errs.New(errs.Internal, "audit tree %s has negative size %d", rec.Tree, size)
	}
	rec.Seq = size
	canonical := rec.Canonical()
	hashes, err := tlog.StoredHashes(size, canonical, hashReader(ctx, a, rec.Tree))
	if err != nil {
		return Record{}, fmt.Errorf("audit tree %s hashes for record %d: %w", rec.Tree, size, err)
	}
	if err := a.AppendRecord(ctx, rec, canonical, hashes); err != nil {
		return Record{}, fmt.Errorf("append audit record %s/%d: %w", rec.Tree, size, err)
	}
	return rec, nil
}
