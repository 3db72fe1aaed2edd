package apikey

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// pepperState is the set of peppers Verify uses, replaced whole by SetPeppers.
type pepperState struct {
	ps      Peppers
	pending map[string]bool // versions pending promotion: never re-digested away from
}

// pepperHolder gives the Service the peppers in use now. Each call reads the set current at that
// moment; a swap between two calls of one Verify is harmless, since a stored digest is always
// checked against the pepper of its own version.
type pepperHolder struct {
	cur atomic.Pointer[pepperState]
}

func newPepperHolder(ps Peppers) *pepperHolder {
	h := &pepperHolder{}
	h.cur.Store(&pepperState{ps: ps})
	return h
}

// Current returns the pepper new digests are made with.
func (h *pepperHolder) Current() Pepper { return h.cur.Load().ps.Current() }

// Get returns the pepper of version, if the set holds it.
func (h *pepperHolder) Get(version string) (Pepper, bool) { return h.cur.Load().ps.Get(version) }

// SetPeppers replaces the peppers the Service uses (a reloaded pepper file): ps must hold a
// current pepper; pending names versions added but not yet promoted everywhere, which keys are
// not re-digested away from. Keys hashed with a pepper the new set lacks stop verifying (the
// verified-key cache may still serve one for its TTL).
func (s *Service) SetPeppers(ps Peppers, pending ...string) error {
	if len(ps.byVersion) == 0 {
		return fmt.Errorf("set peppers: %w", errNoPeppers)
	}
	st := &pepperState{ps: ps, pending: map[string]bool{}}
	for _, v := range pending {
		if v == ps.current {
			return fmt.Errorf("set peppers: the current pepper %s cannot be pending", v)
		}
		if _, ok := ps.Get(v); !ok {
			return fmt.Errorf("set peppers: pending pepper %s is not in the set", v)
		}
		st.pending[v] = true
	}
	s.peppers.cur.Store(st)
	return nil
}

// Peppers returns the set in use and its pending versions (sorted).
func (s *Service) Peppers() (Peppers, []string) {
	st := s.peppers.cur.Load()
	var pending []string
	for v := range st.pending {
		pending = append(pending, v)
	}
	slices.Sort(pending)
	return st.ps, pending
}

// Redigest asks for one digest of a key to be replaced by one made under the current pepper:
// the digest of the current secret (Previous false) or of the previous one still in grace
// (Previous true), replaced only while the stored digest is still Expect.
type Redigest struct {
	ID            string
	Previous      bool
	Expect        []byte
	Hash          []byte
	PepperVersion string
}

// RedigestSink is told of keys that verified under an older pepper; *Redigester implements it.
// Redigest must not block on I/O: it runs on the request path.
type RedigestSink interface {
	Redigest(r Redigest)
}

// RedigestStore writes new digests.
type RedigestStore interface {
	// RedigestAPIKeys writes each r's Hash and PepperVersion over the digest it names (the
	// current one, or the previous one when r.Previous), but only while that digest still
	// equals r.Expect: a key rotated, re-digested by another replica, or deleted meanwhile is
	// left alone. It returns how many digests it replaced. rs holds distinct (ID, Previous)
	// pairs in ascending ID order.
	RedigestAPIKeys(ctx context.Context, rs []Redigest) (int, error)
}

// redigestIfOlder hands the digest that verified — the current one when current, else the
// previous one — to the re-digest sink when it was made with an older pepper, so that the
// pepper can be retired once no key uses it. The new digest is made here, the only moment the
// secret is known; the write happens later, off the request path. Keys hashed with the current
// pepper, or with a pending one (another replica may already hash with it), are left alone.
func (s *Service) redigestIfOlder(k Key, id, secret string, current bool) {
	if s.redigest == nil {
		return
	}
	st := s.peppers.cur.Load()
	cur := st.ps.Current()
	version, expect := k.PepperVersion, k.Hash
	if !current {
		version, expect = k.PrevPepperVersion, k.PrevHash
	}
	if version == cur.Version || st.pending[version] {
		return
	}
	s.redigest.Redigest(Redigest{ID: id, Previous: !current, Expect: expect, Hash: s.digest(cur, id, secret), PepperVersion: cur.Version})
}

// Defaults of RedigestOptions.
const (
	DefaultRedigestInterval = time.Second
	DefaultRedigestBatch    = 200
	// DefaultRedigestPending bounds the re-digests held in memory; more are dropped (the key is
	// asked for again the next time it verifies).
	DefaultRedigestPending = 10000
)

// RedigestOptions are the optional settings of a Redigester; the zero value works.
type RedigestOptions struct {
	Interval     time.Duration // between writes; 0: DefaultRedigestInterval
	BatchSize    int           // re-digests per store call; 0: DefaultRedigestBatch
	MaxPending   int           // held at most; 0: DefaultRedigestPending
	FlushTimeout time.Duration // bound on the final write when Run stops; 0: 5 s
	Logger       *slog.Logger  // nil: discard
	// OnWritten is told how many digests each write replaced (metrics). It must not block.
	OnWritten func(n int)
}

// Redigester collects the re-digests Verify asks for and writes them in batches every Interval,
// and once more when Run stops, so a key used a thousand times a second under an older pepper
// costs one write. A failed write keeps its re-digests for the next tick.
//
// Concurrency: Redigest, Flush and Pending are safe for concurrent use; Run runs once.
type Redigester struct {
	store   RedigestStore
	opts    RedigestOptions
	mu      sync.Mutex // guards pending; never held during I/O
	pending map[redigestKey]Redigest
	flushMu sync.Mutex // serialises flushes
	started atomic.Bool
}

type redigestKey struct {
	id       string
	previous bool
}

var _ RedigestSink = (*Redigester)(nil)

// NewRedigester returns a Redigester writing to store. Start its loop with Run.
func NewRedigester(store RedigestStore, opts RedigestOptions) *Redigester {
	if opts.Interval <= 0 {
		opts.Interval = DefaultRedigestInterval
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = DefaultRedigestBatch
	}
	if opts.MaxPending <= 0 {
		opts.MaxPending = DefaultRedigestPending
	}
	if opts.FlushTimeout <= 0 {
		opts.FlushTimeout = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.OnWritten == nil {
		opts.OnWritten = func(int) {}
	}
	return &Redigester{store: store, opts: opts, pending: map[redigestKey]Redigest{}}
}

// Redigest queues r, replacing a queued one for the same digest. It never blocks on I/O.
func (r *Redigester) Redigest(x Redigest) {
	k := redigestKey{x.ID, x.Previous}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.pending[k]; !ok && len(r.pending) >= r.opts.MaxPending {
		return
	}
	r.pending[k] = x
}

// Pending returns how many re-digests wait for a write.
func (r *Redigester) Pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pending)
}

// Flush writes every queued re-digest now and returns how many digests were replaced. On
// failure the re-digests not written are queued again (unless a newer one came meanwhile).
func (r *Redigester) Flush(ctx context.Context) (int, error) {
	r.flushMu.Lock()
	defer r.flushMu.Unlock()
	r.mu.Lock()
	batch := r.pending
	r.pending = make(map[redigestKey]Redigest, len(batch))
	r.mu.Unlock()
	if len(batch) == 0 {
		return 0, nil
	}
	all := make([]Redigest, 0, len(batch))
	for _, x := range batch {
		all = append(all, x)
	}
	slices.SortFunc(all, func(a, b Redigest) int {
		if c := cmp.Compare(a.ID, b.ID); c != 0 {
			return c
		}
		return cmp.Compare(boolInt(a.Previous), boolInt(b.Previous))
	})
	written := 0
	for start := 0; start < len(all); start += r.opts.BatchSize {
		chunk := all[start:min(start+r.opts.BatchSize, len(all))]
		n, err := r.store.RedigestAPIKeys(ctx, chunk)
		written += n
		if err != nil {
			r.requeue(all[start:])
			r.opts.OnWritten(written)
			return written, fmt.Errorf("re-digest %d api keys: %w", len(all)-start, err)
		}
	}
	r.opts.OnWritten(written)
	return written, nil
}

func (r *Redigester) requeue(xs []Redigest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, x := range xs {
		k := redigestKey{x.ID, x.Previous}
		if _, newer := r.pending[k]; !newer {
			r.pending[k] = x
		}
	}
}

// Run writes queued re-digests every Interval until ctx ends, then once more (bounded by
// FlushTimeout) and returns that write's error.
func (r *Redigester) Run(ctx context.Context) error {
	if !r.started.CompareAndSwap(false, true) {
		return errors.New("redigester: Run called twice")
	}
	t := time.NewTicker(r.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.opts.FlushTimeout)
			defer cancel()
			_, err := r.Flush(fctx)
			return err
		case <-t.C:
			if n, err := r.Flush(ctx); err != nil {
				r.opts.Logger.WarnContext(ctx, "api key re-digest failed; retrying on the next tick", "error", err, "pending", r.Pending())
			} else if n > 0 {
				r.opts.Logger.InfoContext(ctx, "api keys re-digested under the current pepper", "keys", n)
			}
		}
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
