package flags

import "context"

// Store persists flags. Adapters implement it on the transaction bound to ctx, if any, so a
// flag's change commits together with its audit record and event; no method opens a transaction
// of its own, and none fails in a way that ends the caller's transaction when another writer won
// a race. Errors are *errs.Error with the codes named below, or wrapped store failures.
type Store interface {
	// Flag returns the flag of key, or an errs.NotFound.
	Flag(ctx context.Context, key string) (Flag, error)
	// ListFlags returns at most limit flags with a key greater than after ("" for the first
	// page), in ascending byte order of key.
	ListFlags(ctx context.Context, after string, limit int) ([]Flag, error)
	// CreateFlag inserts f. An existing flag of the key is an errs.Conflict wrapping
	// ErrRevisionConflict.
	CreateFlag(ctx context.Context, f Flag) error
	// UpdateFlag writes f's mutable fields, UpdatedAt and Revision where the stored revision is
	// prevRevision: an errs.NotFound when the flag is gone, an errs.Conflict wrapping
	// ErrRevisionConflict when the revision differs.
	UpdateFlag(ctx context.Context, f Flag, prevRevision int64) error
	// DeleteFlag deletes the flag where the stored revision is revision: errs.NotFound when it
	// is gone, errs.Conflict wrapping ErrRevisionConflict when the revision differs.
	DeleteFlag(ctx context.Context, key string, revision int64) error
}
