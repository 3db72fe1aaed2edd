package sqlite

import (
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/consumers"
	"github.com/nops-kernel/nops/internal/store/storetest"
)

// relayVersion is the migration that creates leases, inbox and event_stats.
const relayVersion = 9

func TestLeases(t *testing.T) {
	storetest.RunLeases(t, func(t *testing.T) storetest.LeaseTxStore { return openMigrated(t, Config{}) })
}

func TestInbox(t *testing.T) {
	storetest.RunInbox(t, func(t *testing.T) storetest.InboxTxStore { return openMigrated(t, Config{}) }, inboxBatch)
}

func TestEventStats(t *testing.T) {
	storetest.RunEventStats(t, func(t *testing.T) consumers.EventStatsStore { return openMigrated(t, Config{}) })
}

// TestLeaseRaceAcrossStores races holders through separate stores on one file, as several
// processes sharing the database do: each has its own writer connection, so they compete for
// SQLite's file lock rather than queueing on one connection.
func TestLeaseRaceAcrossStores(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nops.db")
	stores := make([]*Store, 4)
	for i := range stores {
		stores[i] = openTest(t, Config{Path: path})
	}
	if err := stores[0].MigrateUp(t.Context()); err != nil {
		t.Fatalf("MigrateUp: %v", err)
	}
	base := storetest.OutboxBase
	for round := range 20 {
		name := fmt.Sprintf("lease-%d", round)
		for _, now := range []time.Time{base, base.Add(2 * time.Minute)} { // free, then expired
			var (
				mu      sync.Mutex
				winners []string
				wg      sync.WaitGroup
				start   = make(chan struct{})
			)
			for i, s := range stores {
				holder := fmt.Sprintf("process-%d", i)
				wg.Go(func() {
					<-start
					ok, err := s.AcquireLease(t.Context(), name, holder, time.Minute, now)
					if err != nil {
						t.Errorf("AcquireLease: %v", err)
					}
					if ok {
						mu.Lock()
						winners = append(winners, holder)
						mu.Unlock()
					}
				})
			}
			close(start)
			wg.Wait()
			if len(winners) != 1 {
				t.Fatalf("round %d at %v: winners %v, want exactly one", round, now, winners)
			}
		}
	}
}

// TestRelayMigrationDown reverts the relay's migration and applies it again.
func TestRelayMigrationDown(t *testing.T) {
	s := openMigrated(t, Config{})
	ctx := t.Context()
	if ok, err := s.ClaimInbox(ctx, "stats", "evt_1", storetest.OutboxBase); err != nil || !ok {
		t.Fatalf("ClaimInbox = %t, %v", ok, err)
	}
	for migrationApplied(t, s, relayVersion) {
		if err := s.MigrateDown(ctx); err != nil {
			t.Fatalf("MigrateDown: %v", err)
		}
	}
	var leftovers int
	if err := s.reader.QueryRowContext(ctx,
		`SELECT count(*) FROM sqlite_schema WHERE tbl_name IN ('leases', 'inbox', 'event_stats')`).Scan(&leftovers); err != nil {
		t.Fatalf("read schema: %v", err)
	}
	if leftovers != 0 {
		t.Errorf("%d schema objects left after the down migration", leftovers)
	}
	if err := s.MigrateUp(ctx); err != nil {
		t.Fatalf("MigrateUp: %v", err)
	}
	if ok, err := s.ClaimInbox(ctx, "stats", "evt_1", storetest.OutboxBase); err != nil || !ok {
		t.Fatalf("ClaimInbox on the recreated inbox = %t, %v; want true", ok, err)
	}
}

func migrationApplied(t *testing.T, s *Store, version int64) bool {
	t.Helper()
	status, err := s.MigrationStatus(t.Context())
	if err != nil {
		t.Fatalf("MigrationStatus: %v", err)
	}
	for _, m := range status {
		if m.Version == version {
			return m.Applied
		}
	}
	t.Fatalf("no migration %d in %+v", version, status)
	return false
}
