package sealbox

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Kinds of sealed values the kernel stores. The storage adapters list them under these names;
// internal/control knows the associated data each was sealed with.
const (
	KindRequestKey = "request_key" // HMAC secret of a request-signing key (internal/reqsig); aad: the key ID
	KindCAKey      = "ca_key"      // private key of a built-in CA authority (internal/identity); aad: identity.SealAAD(ID)
	KindSigningKey = "signing_key" // private key or HS256 secret of a token signing key (internal/token); aad: token.SealAAD(ID)
)

// Slots of a row holding sealed values.
const (
	SlotCurrent  = "current"  // the value in use (request_keys.sealed_secret, identity_authorities.sealed_key, signing_keys.sealed_key)
	SlotPrevious = "previous" // the value a rotation replaced (request_keys.prev_sealed_secret)
)

// Ref names one sealed value: its kind, the ID of its row and the slot within the row. Refs
// order by Kind, then ID, then Slot.
type Ref struct {
	Kind, ID, Slot string
}

// Compare orders refs by Kind, ID, Slot.
func (r Ref) Compare(o Ref) int {
	return cmp.Or(cmp.Compare(r.Kind, o.Kind), cmp.Compare(r.ID, o.ID), cmp.Compare(r.Slot, o.Slot))
}

// String is "kind/id/slot".
func (r Ref) String() string { return r.Kind + "/" + r.ID + "/" + r.Slot }

// Sealed is one stored sealed value.
type Sealed struct {
	Ref
	Value []byte
}

// Use is how many stored values of one kind name one KEK version. Version is "" for a value too
// malformed to name one.
type Use struct {
	Kind    string
	Version string
	Count   int64
}

// Store lists and replaces the sealed values of a storage adapter. Methods run on the
// transaction bound to ctx, if any, and open none of their own.
type Store interface {
	// SealedValues returns at most limit values with a Ref after after (the zero Ref for the
	// first page), in Ref order; a slot that holds nothing (NULL) is not listed.
	SealedValues(ctx context.Context, after Ref, limit int) ([]Sealed, error)
	// ReplaceSealed writes value over the value s names, but only while it still holds s.Value:
	// false (and no write) when it changed since it was read or the row is gone.
	ReplaceSealed(ctx context.Context, s Sealed, value []byte) (bool, error)
	// SealedUse counts the stored values by kind and the KEK version each names (see Version).
	SealedUse(ctx context.Context) ([]Use, error)
}

// RewrapOptions are Rewrap's settings. AAD is required.
type RewrapOptions struct {
	// AAD returns the associated data the value r names was sealed with; an error for a kind
	// it does not know.
	AAD func(r Ref) ([]byte, error)
	// InTx runs fn in one store transaction: each batch of replacements commits on its own.
	// nil: without a transaction.
	InTx func(ctx context.Context, fn func(ctx context.Context) error) error
	// Batch is how many values are read, and at most replaced, per transaction; 0: 200.
	Batch int
	// Progress is told after each batch how many values were scanned of total (total from
	// SealedUse before the first batch; values added meanwhile may make scanned exceed it).
	Progress func(scanned, total int64)
}

// RewrapResult counts what Rewrap did.
type RewrapResult struct {
	Scanned   int64 // values read
	Current   int64 // already sealed under the current KEK: left as they were
	Rewrapped int64 // re-sealed under the current KEK
	Changed   int64 // changed by someone else between the read and the write: left to them
	Failed    int64 // could not be opened (a KEK missing from the Box, or a damaged value)
	// FailedRefs names the first failures (at most maxFailedRefs).
	FailedRefs []Ref
}

const maxFailedRefs = 20

// Rewrap re-seals every stored value that is not sealed under box's current KEK, so that the
// older KEKs can be retired. Values are read a batch at a time; each is opened with the
// associated data it was sealed with, sealed again under the current KEK, and written back only
// if it is still the value read (a rotation that replaced it meanwhile wins). The plaintext never
// leaves this function. Running it again is harmless: values already under the current KEK are
// skipped. A value that does not open is counted in Failed and left as it is; Rewrap carries on
// and returns the counts with a nil error (the caller decides what failures mean). A store error
// stops it.
func Rewrap(ctx context.Context, st Store, box *Box, opts RewrapOptions) (RewrapResult, error) {
	if opts.AAD == nil {
		return RewrapResult{}, errors.New("rewrap: no associated-data function")
	}
	if opts.Batch <= 0 {
		opts.Batch = 200
	}
	if opts.InTx == nil {
		opts.InTx = func(ctx context.Context, fn func(ctx context.Context) error) error { return fn(ctx) }
	}
	if opts.Progress == nil {
		opts.Progress = func(int64, int64) {}
	}
	var total int64
	uses, err := st.SealedUse(ctx)
	if err != nil {
		return RewrapResult{}, fmt.Errorf("rewrap: count sealed values: %w", err)
	}
	for _, u := range uses {
		total += u.Count
	}
	current := box.Current()
	var res RewrapResult
	after := Ref{}
	for {
		page, err := st.SealedValues(ctx, after, opts.Batch)
		if err != nil {
			return res, fmt.Errorf("rewrap: list sealed values after %s: %w", after, err)
		}
		if len(page) == 0 {
			return res, nil
		}
		type replacement struct {
			s     Sealed
			value []byte
		}
		var todo []replacement
		for _, s := range page {
			res.Scanned++
			if v, ok := Version(s.Value); ok && v == current {
				res.Current++
				continue
			}
			value, err := reseal(box, s, opts.AAD)
			if err != nil {
				res.Failed++
				if len(res.FailedRefs) < maxFailedRefs {
					res.FailedRefs = append(res.FailedRefs, s.Ref)
				}
				continue
			}
			todo = append(todo, replacement{s, value})
		}
		if len(todo) > 0 {
			var rewrapped, changed int64
			err := opts.InTx(ctx, func(ctx context.Context) error {
				rewrapped, changed = 0, 0
				for _, r := range todo {
					ok, err := st.ReplaceSealed(ctx, r.s, r.value)
					if err != nil {
						return fmt.Errorf("replace %s: %w", r.s.Ref, err)
					}
					if ok {
						rewrapped++
					} else {
						changed++
					}
				}
				return nil
			})
			if err != nil {
				return res, fmt.Errorf("rewrap: %w", err)
			}
			res.Rewrapped += rewrapped
			res.Changed += changed
		}
		opts.Progress(res.Scanned, total)
		after = page[len(page)-1].Ref
	}
}

// reseal opens s and seals its plaintext again under box's current KEK, with the same
// associated data; the plaintext is cleared before returning.
func reseal(box *Box, s Sealed, aadOf func(Ref) ([]byte, error)) ([]byte, error) {
	aad, err := aadOf(s.Ref)
	if err != nil {
		return nil, err
	}
	plain, err := box.Open(s.Value, aad)
	if err != nil {
		return nil, err
	}
	defer clear(plain)
	return box.Seal(plain, aad)
}

// ErrInUse is wrapped by CheckRetire's refusal.
var ErrInUse = errors.New("key-encryption key still in use")

// CheckRetire returns nil when no stored value names version, else an error wrapping ErrInUse
// that counts them by kind. Retiring a KEK some value names makes that value unreadable: a
// request-signing key that no longer verifies, a CA that can no longer sign.
func CheckRetire(ctx context.Context, st Store, version string) error {
	uses, err := st.SealedUse(ctx)
	if err != nil {
		return fmt.Errorf("count sealed values: %w", err)
	}
	var parts []string
	for _, u := range uses {
		if u.Version == version && u.Count > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", u.Count, u.Kind))
		}
	}
	if len(parts) == 0 {
		return nil
	}
	slices.Sort(parts)
	return fmt.Errorf("%w: key %s seals %s; run a rewrap under the current key first", ErrInUse, version, strings.Join(parts, ", "))
}
