package audit

import (
	"slices"
	"sync"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
)

// Policy says when a tree needs a new checkpoint: as soon as EveryRecords records are not covered
// by one, or Interval after the oldest such record was seen, whichever comes first. It bounds both
// how many records and for how long an attacker with database access could rewrite them without
// contradicting a signed checkpoint.
type Policy struct {
	EveryRecords int64
	Interval     time.Duration
}

// DefaultPolicy signs every 1000 records or 10 seconds.
func DefaultPolicy() Policy { return Policy{EveryRecords: 1000, Interval: 10 * time.Second} }

// Validate checks that both bounds are positive.
func (p Policy) Validate() error {
	if p.EveryRecords < 1 {
		return errs.Field("every_records", "must be at least 1")
	}
	if p.Interval <= 0 {
		return errs.Field("interval", "must be positive")
	}
	return nil
}

// Checkpointer decides when trees need a checkpoint. It only decides: the kernel tells it what
// was appended (Appended) and signed (Signed), asks which trees are Due, signs those with
// SignCheckpoint, and sleeps until NextDue or the next Appended. It is safe for concurrent use
// and starts no goroutine; now is its only clock.
//
// A tree the Checkpointer has not seen signed is treated as signed at size 0, so after a restart
// every tree with records gets a checkpoint within one Interval of its first append (SignCheckpoint
// returns the stored one when nothing changed). Call Signed with the latest stored checkpoint at
// startup to avoid that.
type Checkpointer struct {
	policy Policy
	now    func() time.Time

	mu    sync.Mutex
	trees map[string]*treeState
}

type treeState struct {
	signed   int64     // size of the latest checkpoint
	observed int64     // largest size reported by Appended
	since    time.Time // when the oldest record beyond signed was first observed
}

func (s *treeState) pending() bool { return s.observed > s.signed }

// NewCheckpointer returns a Checkpointer for p reading time from now.
func NewCheckpointer(p Policy, now func() time.Time) (*Checkpointer, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &Checkpointer{policy: p, now: now, trees: map[string]*treeState{}}, nil
}

func (c *Checkpointer) state(tree string) *treeState {
	s, ok := c.trees[tree]
	if !ok {
		s = &treeState{}
		c.trees[tree] = s
	}
	return s
}

// Appended notes that tree has reached size (the appended record's Seq+1), after the commit.
// Reports may arrive out of order; a size already covered changes nothing.
func (c *Checkpointer) Appended(tree string, size int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.state(tree)
	if size <= s.observed || size <= s.signed {
		return
	}
	if !s.pending() {
		s.since = c.now()
	}
	s.observed = size
}

// Signed notes that a checkpoint of tree at size was stored. Records observed beyond size count
// as pending from now: they were appended while the checkpoint was being signed.
func (c *Checkpointer) Signed(tree string, size int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.state(tree)
	if size <= s.signed {
		return
	}
	s.signed = size
	if s.pending() {
		s.since = c.now()
	}
}

// Due returns the trees that need a checkpoint now, sorted.
func (c *Checkpointer) Due() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	var due []string
	for tree, s := range c.trees {
		if s.pending() && (s.observed-s.signed >= c.policy.EveryRecords || !now.Before(s.since.Add(c.policy.Interval))) {
			due = append(due, tree)
		}
	}
	slices.Sort(due)
	return due
}

// NextDue returns the earliest time at which a tree with pending records becomes due by
// Interval; false when no records are pending.
func (c *Checkpointer) NextDue() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var next time.Time
	found := false
	for _, s := range c.trees {
		if !s.pending() {
			continue
		}
		if t := s.since.Add(c.policy.Interval); !found || t.Before(next) {
			next, found = t, true
		}
	}
	return next, found
}
