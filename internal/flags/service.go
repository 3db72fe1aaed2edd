package flags

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/pagecursor"
)

// Page sizes of List.
const (
	DefaultListLimit = 50
	MaxListLimit     = 100
)

// writeAttempts bounds how often an unconditional Put or Delete re-reads a flag that changed
// between its read and its compare-and-set write.
const writeAttempts = 3

// ServiceOptions are a Service's optional settings; the zero value works.
type ServiceOptions struct {
	Now    func() time.Time // nil: time.Now
	Logger *slog.Logger     // nil: discard
}

// Service manages flags: validation and optimistic concurrency. internal/control calls Put and
// Delete inside the transaction of the audit record and the event. Safe for concurrent use.
type Service struct {
	store Store
	now   func() time.Time
	log   *slog.Logger
}

// NewService returns a Service over store.
func NewService(store Store, opts ServiceOptions) (*Service, error) {
	if store == nil {
		return nil, errors.New("new flags service: nil store")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Service{store: store, now: opts.Now, log: opts.Logger}, nil
}

func (s *Service) clock() time.Time { return s.now().UTC().Truncate(time.Microsecond) }

// notFound does not echo the key: it may be any string a client put in a URL.
func notFound() error { return errs.New(errs.NotFound, "flag not found") }

// Get returns the flag of key, or an errs.NotFound.
func (s *Service) Get(ctx context.Context, key string) (Flag, error) {
	if !ValidKey(key) {
		return Flag{}, notFound()
	}
	f, found, err := s.read(ctx, key)
	if err != nil {
		return Flag{}, err
	}
	if !found {
		return Flag{}, notFound()
	}
	return f, nil
}

func (s *Service) read(ctx context.Context, key string) (Flag, bool, error) {
	f, err := s.store.Flag(ctx, key)
	switch {
	case errs.Is(err, errs.NotFound):
		return Flag{}, false, nil
	case err != nil:
		return Flag{}, false, fmt.Errorf("get flag %s: %w", key, err)
	case f.Key != key:
		return Flag{}, false, nil
	}
	return f, true, nil
}

// ListInput selects a page of flags. Cursor is the NextCursor of the previous page; Limit is
// 1..MaxListLimit (0: DefaultListLimit).
type ListInput struct {
	Cursor string
	Limit  int
}

// Page is one page of flags in ascending key order. NextCursor is "" on the last.
type Page struct {
	Flags      []Flag
	NextCursor string
}

// List returns a page of flags.
func (s *Service) List(ctx context.Context, in ListInput) (Page, error) {
	// The cursor is the last key of the previous page: the caller may read it anyway.
	if in.Cursor != "" && !ValidKey(in.Cursor) {
		return Page{}, errs.Field("query.cursor", "not a cursor returned by this API")
	}
	limit, err := pagecursor.Limit(in.Limit, DefaultListLimit, MaxListLimit)
	if err != nil {
		return Page{}, err
	}
	fs, err := s.store.ListFlags(ctx, in.Cursor, limit+1)
	if err != nil {
		return Page{}, fmt.Errorf("list flags: %w", err)
	}
	var page Page
	page.Flags, page.NextCursor = pagecursor.Trim(fs, limit, func(f Flag) string { return f.Key })
	return page, nil
}

// Change is the outcome of Put. Before is nil when the flag was created. Changed is false when
// the spec equalled the stored flag; then nothing was written.
type Change struct {
	Before  *Flag
	After   Flag
	Created bool
	Changed bool
}

// Put creates or replaces the flag of key with spec. pre's conditions, when set, must hold.
// Without them a write that lost a race re-reads and tries again: the last writer wins.
func (s *Service) Put(ctx context.Context, key string, pre Preconditions, spec Spec) (Change, error) {
	if !ValidKey(key) {
		return Change{}, errs.Field("path.key", fmt.Sprintf("must be a flag key: a lowercase letter, then lowercase letters, digits, '_', '-' and '.', at most %d bytes", MaxKeyLen))
	}
	norm, err := spec.Normalize()
	if err != nil {
		return Change{}, err
	}
	conditional := pre != (Preconditions{})
	var lastErr error
	for range writeAttempts {
		cur, found, err := s.read(ctx, key)
		if err != nil {
			return Change{}, err
		}
		var before *Flag
		if found {
			before = &cur
		}
		if err := pre.Check(before); err != nil {
			return Change{}, err
		}
		if found && cur.Spec().equal(norm) {
			return Change{Before: before, After: cur}, nil
		}
		now := s.clock()
		var after Flag
		if found {
			after = cur.with(norm)
			after.Revision, after.UpdatedAt = cur.Revision+1, now
			err = s.store.UpdateFlag(ctx, after, cur.Revision)
		} else {
			after = Flag{Key: key, Revision: 1, CreatedAt: now, UpdatedAt: now}.with(norm)
			err = s.store.CreateFlag(ctx, after)
		}
		switch {
		case err == nil:
			s.log.InfoContext(ctx, "flag written", "flag", key, "revision", after.Revision, "created", !found)
			return Change{Before: before, After: after, Created: !found, Changed: true}, nil
		case !errors.Is(err, ErrRevisionConflict) && !(found && errs.Is(err, errs.NotFound)):
			return Change{}, fmt.Errorf("put flag %s: %w", key, err)
		case conditional:
			return Change{}, errs.Wrap(errs.PreconditionFailed, err, "the flag was changed since it was read; get it again and retry")
		}
		lastErr = errs.Wrap(errs.Conflict, err, "the flag kept changing while it was being written; retry")
	}
	return Change{}, lastErr
}

// Delete deletes the flag of key and returns it as it was. ifMatch is optional; when given it
// must match.
func (s *Service) Delete(ctx context.Context, key, ifMatch string) (Flag, error) {
	if !ValidKey(key) {
		return Flag{}, notFound()
	}
	pre := Preconditions{IfMatch: ifMatch}
	var lastErr error
	for range writeAttempts {
		cur, found, err := s.read(ctx, key)
		if err != nil {
			return Flag{}, err
		}
		if !found {
			return Flag{}, notFound()
		}
		if err := pre.Check(&cur); err != nil {
			return Flag{}, err
		}
		err = s.store.DeleteFlag(ctx, key, cur.Revision)
		switch {
		case err == nil:
			s.log.InfoContext(ctx, "flag deleted", "flag", key)
			return cur, nil
		case errs.Is(err, errs.NotFound):
			return Flag{}, notFound()
		case !errors.Is(err, ErrRevisionConflict):
			return Flag{}, fmt.Errorf("delete flag %s: %w", key, err)
		case ifMatch != "":
			return Flag{}, errs.Wrap(errs.PreconditionFailed, err, "the flag was changed since it was read; get it again and retry")
		}
		lastErr = errs.Wrap(errs.Conflict, err, "the flag kept changing while it was being deleted; retry")
	}
	return Flag{}, lastErr
}
