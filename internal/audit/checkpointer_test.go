package audit_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/audit"
	"github.com/nops-kernel/nops/internal/errs"
)

// fakeClock is a manually advanced clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newCheckpointer(t *testing.T, every int64, interval time.Duration) (*audit.Checkpointer, *fakeClock) {
	t.Helper()
	clk := &fakeClock{now: t0}
	c, err := audit.NewCheckpointer(audit.Policy{EveryRecords: every, Interval: interval}, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	return c, clk
}

func requireDue(t *testing.T, c *audit.Checkpointer, want ...string) {
	t.Helper()
	if diff := cmp.Diff(want, c.Due()); diff != "" {
		t.Fatalf("Due (-want +got):\n%s", diff)
	}
}

func TestPolicyValidate(t *testing.T) {
	if err := audit.DefaultPolicy().Validate(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []audit.Policy{{EveryRecords: 0, Interval: time.Second}, {EveryRecords: 1, Interval: 0}, {EveryRecords: 1, Interval: -time.Second}} {
		if _, err := audit.NewCheckpointer(p, time.Now); !errs.Is(err, errs.Invalid) {
			t.Errorf("NewCheckpointer(%+v) = %v, want invalid", p, err)
		}
	}
}

func TestCheckpointerEveryRecords(t *testing.T) {
	c, _ := newCheckpointer(t, 3, time.Hour)
	requireDue(t, c)
	c.Appended("a", 1)
	c.Appended("a", 2)
	requireDue(t, c)
	c.Appended("a", 3)
	requireDue(t, c, "a")
	c.Signed("a", 3)
	requireDue(t, c)
	if _, ok := c.NextDue(); ok {
		t.Fatal("NextDue reports pending records after everything was signed")
	}
	c.Appended("a", 5)
	requireDue(t, c)
	c.Appended("a", 6)
	requireDue(t, c, "a")
}

func TestCheckpointerInterval(t *testing.T) {
	c, clk := newCheckpointer(t, 100, 10*time.Second)
	if _, ok := c.NextDue(); ok {
		t.Fatal("NextDue with nothing pending")
	}
	c.Appended("a", 1)
	clk.Advance(5 * time.Second)
	c.Appended("a", 2) // the interval runs from the oldest unsigned record
	next, ok := c.NextDue()
	if !ok || !next.Equal(t0.Add(10*time.Second)) {
		t.Fatalf("NextDue = %v %v, want %v", next, ok, t0.Add(10*time.Second))
	}
	clk.Advance(5*time.Second - time.Nanosecond)
	requireDue(t, c)
	clk.Advance(time.Nanosecond)
	requireDue(t, c, "a")
}

func TestCheckpointerSignedPartially(t *testing.T) {
	c, clk := newCheckpointer(t, 100, 10*time.Second)
	c.Appended("a", 5)
	clk.Advance(20 * time.Second)
	requireDue(t, c, "a")
	c.Signed("a", 3) // records 3 and 4 were appended while signing
	requireDue(t, c)
	next, ok := c.NextDue()
	if !ok || !next.Equal(t0.Add(30*time.Second)) {
		t.Fatalf("NextDue = %v %v, want %v", next, ok, t0.Add(30*time.Second))
	}
	clk.Advance(10 * time.Second)
	requireDue(t, c, "a")
}

func TestCheckpointerIgnoresStaleReports(t *testing.T) {
	c, clk := newCheckpointer(t, 2, 10*time.Second)
	c.Signed("a", 5) // seeded from the latest stored checkpoint
	c.Appended("a", 4)
	c.Appended("a", 5)
	clk.Advance(time.Hour)
	requireDue(t, c)
	c.Appended("a", 7)
	c.Appended("a", 6) // out of order
	requireDue(t, c, "a")
	c.Signed("a", 7)
	c.Signed("a", 6) // older signature reported late
	requireDue(t, c)
	c.Appended("a", 8)
	requireDue(t, c)
}

func TestCheckpointerManyTrees(t *testing.T) {
	c, clk := newCheckpointer(t, 2, 10*time.Second)
	c.Appended("b", 1)
	clk.Advance(3 * time.Second)
	c.Appended("a", 1)
	c.Appended("c", 2)
	requireDue(t, c, "c")
	next, ok := c.NextDue()
	if !ok || !next.Equal(t0.Add(10*time.Second)) {
		t.Fatalf("NextDue = %v %v, want the oldest pending tree's deadline %v", next, ok, t0.Add(10*time.Second))
	}
	clk.Advance(7 * time.Second)
	requireDue(t, c, "b", "c")
	clk.Advance(3 * time.Second)
	requireDue(t, c, "a", "b", "c")
}

func TestCheckpointerConcurrentUse(t *testing.T) {
	c, clk := newCheckpointer(t, 10, time.Second)
	var wg sync.WaitGroup
	for g := range 4 {
		tree := fmt.Sprintf("t%d", g)
		wg.Go(func() {
			for i := int64(1); i <= 200; i++ {
				c.Appended(tree, i)
				for _, due := range c.Due() {
					if due == tree {
						c.Signed(tree, i)
					}
				}
				c.NextDue()
				clk.Advance(time.Millisecond)
			}
		})
	}
	wg.Wait()
	for _, due := range c.Due() {
		t.Errorf("tree %s still due", due)
	}
}
