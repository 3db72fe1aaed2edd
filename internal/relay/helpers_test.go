package relay_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/events"
	"github.com/nops-kernel/nops/internal/relay"
	"github.com/nops-kernel/nops/internal/store/postgres"
	"github.com/nops-kernel/nops/internal/store/sqlite"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Store is what the relay tests need of a storage adapter.
type Store interface {
	events.OutboxStore
	relay.LeaseStore
	InTx(ctx context.Context, fn func(ctx context.Context) error) error
}

// eachBackend runs fn once per storage adapter, each in its own parallel subtest with its own
// database: open returns another store (connection pool) on that database each time, as another
// replica or process has. PostgreSQL runs when NOPS_TEST_POSTGRES_URL is set.
func eachBackend(t *testing.T, fn func(t *testing.T, open func(t *testing.T) Store)) {
	t.Run("sqlite", func(t *testing.T) { t.Parallel(); fn(t, sqliteOpener(t)) })
	t.Run("postgres", func(t *testing.T) { t.Parallel(); fn(t, postgresDatabase(t)) })
}

// sqliteOpener returns an opener of stores on one new SQLite file, migrated by the first.
func sqliteOpener(t *testing.T) func(t *testing.T) Store {
	path := filepath.Join(t.TempDir(), "nops.db")
	var once sync.Once
	return func(t *testing.T) Store {
		t.Helper()
		s, err := sqlite.Open(t.Context(), sqlite.Config{Path: path}, nil)
		if err != nil {
			t.Fatalf("open sqlite: %v", err)
		}
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Errorf("close sqlite: %v", err)
			}
		})
		var merr error
		once.Do(func() { merr = s.MigrateUp(t.Context()) })
		if merr != nil {
			t.Fatalf("migrate sqlite: %v", merr)
		}
		return s
	}
}

// postgresDatabase creates a fresh database (or skips) and returns an opener of stores on it.
func postgresDatabase(t *testing.T) func(t *testing.T) Store {
	t.Helper()
	url := services.Postgres(t)
	var once sync.Once
	return func(t *testing.T) Store {
		t.Helper()
		s, err := postgres.Open(t.Context(), postgres.Config{URL: url, MaxConns: 6}, nil)
		if err != nil {
			t.Fatalf("open postgres: %v", err)
		}
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Errorf("close postgres: %v", err)
			}
		})
		var merr error
		once.Do(func() { merr = s.MigrateUp(t.Context()) })
		if merr != nil {
			t.Fatalf("migrate postgres: %v", merr)
		}
		return s
	}
}

// record returns the outbox record of a real event about agent n (its subject), optionally with
// a traceparent.
func record(t *testing.T, n int, traceparent string) events.OutboxRecord {
	t.Helper()
	agent := fmt.Sprintf("agt_%04d", n)
	at := time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC)
	p := events.AgentHeartbeat{AgentID: agent, Tenant: "ten_relay", HeartbeatAt: at}
	e, err := events.New(events.TypeAgentHeartbeat, p.Tenant, events.AgentSubject(agent), p, at, traceparent)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	r, err := e.Outbox()
	if err != nil {
		t.Fatalf("Outbox: %v", err)
	}
	return r
}

// add commits rs in one transaction and returns them as stored (with Seq).
func add(t *testing.T, s Store, rs ...events.OutboxRecord) {
	t.Helper()
	err := s.InTx(t.Context(), func(ctx context.Context) error {
		for _, r := range rs {
			if err := s.AddToOutbox(ctx, r); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("add %d records: %v", len(rs), err)
	}
}

func pending(t *testing.T, s Store) []events.OutboxRecord {
	t.Helper()
	recs, err := s.PendingOutbox(t.Context(), 100000)
	if err != nil {
		t.Fatalf("PendingOutbox: %v", err)
	}
	return recs
}

// recorder is a test publisher shared by the relays of a test: it records what it is given (as
// a broker would store it, dropping ids seen before) and detects two relays publishing at once.
// A publish takes a little while (delay), in which another relay publishing would overlap.
type recorder struct {
	delay time.Duration

	mu       sync.Mutex
	msgs     []bus.Message // every message stored, first occurrence of each id only
	all      int           // messages received, repeats included
	seen     map[string]bool
	fail     error
	calls    int
	active   map[string]int // relay name → publishes in progress
	overlaps []string
}

func newRecorder(delay time.Duration) *recorder {
	return &recorder{delay: delay, seen: map[string]bool{}, active: map[string]int{}}
}

// as is the publisher relay name uses.
func (p *recorder) as(name string) bus.Publisher { return namedPublisher{p, name} }

type namedPublisher struct {
	p    *recorder
	name string
}

func (n namedPublisher) Publish(ctx context.Context, msgs ...bus.Message) error {
	return n.p.publish(ctx, n.name, msgs)
}

func (p *recorder) publish(ctx context.Context, name string, msgs []bus.Message) error {
	// A publish whose context has ended sends nothing, as a broker client does.
	if err := ctx.Err(); err != nil {
		return err
	}
	p.mu.Lock()
	p.calls++
	for other, n := range p.active {
		if other != name && n > 0 {
			p.overlaps = append(p.overlaps, fmt.Sprintf("%s published while %s was publishing", name, other))
		}
	}
	p.active[name]++
	fail := p.fail
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.active[name]--
		p.mu.Unlock()
	}()
	if fail != nil {
		return fail
	}
	for _, m := range msgs {
		if err := m.Validate(); err != nil {
			return err
		}
	}
	if p.delay > 0 {
		// The messages travel to the broker: a publish whose context ends first fails.
		t := time.NewTimer(p.delay)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range msgs {
		p.all++
		if !p.seen[m.ID] {
			p.seen[m.ID] = true
			p.msgs = append(p.msgs, m)
		}
	}
	return nil
}

func (p *recorder) setFail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fail = err
}

func (p *recorder) messages() []bus.Message {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.msgs)
}

func (p *recorder) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.msgs)
}

func (p *recorder) overlapping() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.overlaps)
}

// run runs r until the returned stop is called (also at cleanup) and returns stop, which waits
// for Run to return.
func run(t *testing.T, r *relay.Relay) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	stop = sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	t.Cleanup(stop)
	return stop
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// checkOrder checks that msgs hold every record of want (in commit order) exactly once and, per
// subject, in that order.
func checkOrder(t *testing.T, want []events.OutboxRecord, msgs []bus.Message) {
	t.Helper()
	if len(msgs) != len(want) {
		t.Errorf("%d messages published, want %d", len(msgs), len(want))
	}
	subject := map[string]string{}
	wantOrder := map[string][]string{}
	for _, r := range want {
		subject[r.ID] = r.Subject
		wantOrder[r.Subject] = append(wantOrder[r.Subject], r.ID)
	}
	gotOrder := map[string][]string{}
	for _, m := range msgs {
		s, ok := subject[m.ID]
		if !ok {
			t.Errorf("published %s, which is not a record of the test", m.ID)
			continue
		}
		gotOrder[s] = append(gotOrder[s], m.ID)
	}
	for s, ids := range wantOrder {
		if !slices.Equal(ids, gotOrder[s]) {
			t.Errorf("subject %s published as %v, want %v (seq order)", s, gotOrder[s], ids)
		}
	}
}
