package token_test

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/token"
)

// fakeStore is an in-memory token.KeyStore with the hooks the tests need.
type fakeStore struct {
	mu   sync.Mutex
	keys []token.SigningKey
	// newestFirst returns keys in the reverse of the documented order, to show the service does not
	// depend on it.
	newestFirst bool
	listErr     error
	createErr   error
	// afterCreate, when set, runs after a key is stored and before CreateSigningKey returns.
	afterCreate func(ctx context.Context) error
	// The first beforeFirstLists calls of SigningKeys wait at firstLists after reading.
	beforeFirstLists int
	firstLists       *barrier

	listCalls atomic.Int64
	sealErr   error // returned by SealSigningKey
	sealCalls int   // guarded by mu
}

var _ token.KeyStore = (*fakeStore)(nil)

func newFakeStore(keys ...token.SigningKey) *fakeStore {
	return &fakeStore{keys: slices.Clone(keys)}
}

func (f *fakeStore) CreateSigningKey(ctx context.Context, k token.SigningKey) error {
	f.mu.Lock()
	if f.createErr != nil {
		f.mu.Unlock()
		return f.createErr
	}
	if slices.ContainsFunc(f.keys, func(s token.SigningKey) bool { return s.ID == k.ID }) {
		f.mu.Unlock()
		return errs.New(errs.Conflict, "signing key %s exists", k.ID)
	}
	k.Private, k.Sealed = slices.Clone(k.Private), slices.Clone(k.Sealed)
	f.keys = append(f.keys, k)
	hook := f.afterCreate
	f.mu.Unlock()
	if hook != nil {
		return hook(ctx)
	}
	return nil
}

func (f *fakeStore) RotateSigningKey(ctx context.Context, k token.SigningKey, overlap time.Duration) (token.SigningKey, []string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.createErr != nil {
		return token.SigningKey{}, nil, f.createErr
	}
	if slices.ContainsFunc(f.keys, func(s token.SigningKey) bool { return s.ID == k.ID }) {
		return token.SigningKey{}, nil, errs.New(errs.Conflict, "signing key %s exists", k.ID)
	}
	activation := func(s token.SigningKey) time.Time {
		if s.ActivatesAt.IsZero() {
			return s.CreatedAt
		}
		return s.ActivatesAt
	}
	var superseded []int
	for i, s := range f.keys {
		if s.Algorithm == k.Algorithm && s.RetiresAt.IsZero() {
			superseded = append(superseded, i)
			if a := activation(s); !k.ActivatesAt.After(a) {
				k.ActivatesAt = a.Add(time.Microsecond)
			}
		}
	}
	var ids []string
	for _, i := range superseded {
		f.keys[i].RetiresAt = k.ActivatesAt.Add(overlap)
		ids = append(ids, f.keys[i].ID)
	}
	k.Private, k.Sealed = slices.Clone(k.Private), slices.Clone(k.Sealed)
	f.keys = append(f.keys, k)
	return k, ids, nil
}

func (f *fakeStore) SigningKeys(ctx context.Context) (keys []token.SigningKey, err error) {
	n := f.listCalls.Add(1)
	f.mu.Lock()
	defer func() {
		if n <= int64(f.beforeFirstLists) {
			// Wait after reading, so every one of these calls has seen the same state.
			if werr := f.firstLists.wait(ctx); werr != nil && err == nil {
				keys, err = nil, werr
			}
		}
	}()
	defer f.mu.Unlock()
	if f.listErr != nil {
		return nil, f.listErr
	}
	out := make([]token.SigningKey, len(f.keys))
	for i, k := range f.keys {
		k.Private, k.Sealed = slices.Clone(k.Private), slices.Clone(k.Sealed)
		out[i] = k
	}
	slices.SortStableFunc(out, func(a, b token.SigningKey) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	if f.newestFirst {
		slices.Reverse(out)
	}
	return out, nil
}

// SealSigningKey seals a clear row while it still holds clear, as the adapters do.
func (f *fakeStore) SealSigningKey(ctx context.Context, id string, clear, sealed []byte) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sealCalls++
	if f.sealErr != nil {
		return false, f.sealErr
	}
	for i, k := range f.keys {
		if k.ID == id && len(k.Sealed) == 0 && bytes.Equal(k.Private, clear) {
			f.keys[i].Private, f.keys[i].Sealed = nil, slices.Clone(sealed)
			return true, nil
		}
	}
	return false, nil
}

func (f *fakeStore) add(k token.SigningKey) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.keys = append(f.keys, k)
}

func (f *fakeStore) all() []token.SigningKey {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.keys)
}

func (f *fakeStore) setListErr(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.listErr = err
}

func (f *fakeStore) clear() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.keys = nil
}

var errStoreDown = errors.New("store down")

// barrier releases its waiters once n have arrived.
type barrier struct {
	mu   sync.Mutex
	left int
	all  chan struct{}
}

func newBarrier(n int) *barrier { return &barrier{left: n, all: make(chan struct{})} }

func (b *barrier) wait(ctx context.Context) error {
	b.mu.Lock()
	if b.left--; b.left == 0 {
		close(b.all)
	}
	b.mu.Unlock()
	select {
	case <-b.all:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
