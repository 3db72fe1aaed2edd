package sqlite

import (
	"database/sql"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/nops-kernel/nops/internal/store/storetest"
	"github.com/nops-kernel/nops/internal/token"
	"github.com/nops-kernel/nops/internal/user"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// openTest opens a store (on a new file in a temporary directory when cfg.Path is empty) and
// closes it when the test ends.
func openTest(t *testing.T, cfg Config) *Store {
	t.Helper()
	if cfg.Path == "" {
		cfg.Path = filepath.Join(t.TempDir(), "nops.db")
	}
	s, err := Open(t.Context(), cfg, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func openMigrated(t *testing.T, cfg Config) *Store {
	t.Helper()
	s := openTest(t, cfg)
	if err := s.MigrateUp(t.Context()); err != nil {
		t.Fatalf("MigrateUp: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Store { return openMigrated(t, Config{}) })
}

type pragmas struct {
	JournalMode string
	Synchronous int
	BusyTimeout int
	ForeignKeys int
	QueryOnly   int
}

func readPragmas(t *testing.T, conn *sql.Conn) pragmas {
	t.Helper()
	var p pragmas
	for _, q := range []struct {
		pragma string
		dst    any
	}{
		{"journal_mode", &p.JournalMode},
		{"synchronous", &p.Synchronous},
		{"busy_timeout", &p.BusyTimeout},
		{"foreign_keys", &p.ForeignKeys},
		{"query_only", &p.QueryOnly},
	} {
		if err := conn.QueryRowContext(t.Context(), "PRAGMA "+q.pragma).Scan(q.dst); err != nil {
			t.Fatalf("PRAGMA %s: %v", q.pragma, err)
		}
	}
	return p
}

// TestPragmas checks the settings of the writer and of several reader connections held at once,
// so that more than one reader connection is inspected.
func TestPragmas(t *testing.T) {
	const synchronousFull = 2
	tests := []struct {
		name        string
		busyTimeout time.Duration
		wantBusyMS  int
	}{
		{"configured busy timeout", 1234 * time.Millisecond, 1234},
		{"default busy timeout", 0, int(DefaultBusyTimeout.Milliseconds())},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTest(t, Config{BusyTimeout: tt.busyTimeout})
			ctx := t.Context()
			want := pragmas{JournalMode: "wal", Synchronous: synchronousFull, BusyTimeout: tt.wantBusyMS, ForeignKeys: 1}

			wconn, err := s.writer.Conn(ctx)
			if err != nil {
				t.Fatalf("writer conn: %v", err)
			}
			if diff := cmp.Diff(want, readPragmas(t, wconn)); diff != "" {
				t.Errorf("writer pragmas (-want +got):\n%s", diff)
			}
			if err := wconn.Close(); err != nil {
				t.Fatalf("close writer conn: %v", err)
			}

			want.QueryOnly = 1
			for i := range 3 {
				rconn, err := s.reader.Conn(ctx)
				if err != nil {
					t.Fatalf("reader conn: %v", err)
				}
				t.Cleanup(func() { _ = rconn.Close() })
				if diff := cmp.Diff(want, readPragmas(t, rconn)); diff != "" {
					t.Errorf("reader %d pragmas (-want +got):\n%s", i, diff)
				}
			}
		})
	}
}

func TestOneWriterAndReadOnlyReaders(t *testing.T) {
	s := openMigrated(t, Config{})
	if got := s.writer.Stats().MaxOpenConnections; got != 1 {
		t.Errorf("writer MaxOpenConnections = %d, want 1", got)
	}
	if got := s.reader.Stats().MaxOpenConnections; got < 2 {
		t.Errorf("reader MaxOpenConnections = %d, want several", got)
	}
	_, err := s.reader.ExecContext(t.Context(),
		`INSERT INTO signing_keys (id, algorithm, private_key, created_at) VALUES ('key_x', 'EdDSA', x'00', '')`)
	if err == nil {
		t.Fatal("a write through the reader pool succeeded, want a read-only error")
	}
}

// TestConcurrentWritesNeverBusy writes from many goroutines, with reads alongside, under a busy
// timeout far shorter than one fsync'd commit: with more than one writer connection, writers
// would wait on each other's lock and fail with SQLITE_BUSY.
func TestConcurrentWritesNeverBusy(t *testing.T) {
	s := openMigrated(t, Config{BusyTimeout: time.Millisecond})
	ctx := t.Context()
	const writers, each = 12, 10
	var wg sync.WaitGroup
	errc := make(chan error, writers*each*2+writers)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				n := w*each + i
				now := time.Now()
				u := user.User{ID: fmt.Sprintf("usr_%03d", n), Username: fmt.Sprintf("u%03d", n), PasswordHash: []byte("h"), CreatedAt: now, UpdatedAt: now}
				if err := s.CreateUser(ctx, u); err != nil {
					errc <- fmt.Errorf("CreateUser %d: %w", n, err)
				}
				k := token.SigningKey{ID: fmt.Sprintf("key_%03d", n), Algorithm: "EdDSA", Private: []byte("p"), CreatedAt: now}
				if err := s.CreateSigningKey(ctx, k); err != nil {
					errc <- fmt.Errorf("CreateSigningKey %d: %w", n, err)
				}
			}
		})
		wg.Go(func() {
			for range each {
				if _, err := s.SigningKeys(ctx); err != nil {
					errc <- fmt.Errorf("SigningKeys: %w", err)
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	keys, err := s.SigningKeys(ctx)
	if err != nil {
		t.Fatalf("SigningKeys: %v", err)
	}
	if len(keys) != writers*each {
		t.Errorf("stored %d keys, want %d", len(keys), writers*each)
	}
}

func TestOpenCreatesPrivateFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	path := filepath.Join(dir, "nops.db")
	s := openMigrated(t, Config{Path: path})
	if err := s.CreateSigningKey(t.Context(), token.SigningKey{ID: "key_1", Algorithm: "EdDSA", Private: []byte("p"), CreatedAt: time.Now()}); err != nil {
		t.Fatalf("CreateSigningKey: %v", err)
	}
	for _, c := range []struct {
		path string
		want fs.FileMode
	}{
		{dir, 0o700 | fs.ModeDir},
		{path, 0o600},
		{path + "-wal", 0o600},
	} {
		fi, err := os.Stat(c.path)
		if err != nil {
			t.Fatalf("stat: %v", err)
		}
		if got := fi.Mode() & (fs.ModePerm | fs.ModeDir); got != c.want {
			t.Errorf("%s mode = %v, want %v", c.path, got, c.want)
		}
	}
}

func TestDataSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nops.db")
	s, err := Open(t.Context(), Config{Path: path}, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := s.MigrateUp(t.Context()); err != nil {
		t.Fatalf("MigrateUp: %v", err)
	}
	created := time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC)
	u := user.User{ID: "usr_1", Username: "admin", PasswordHash: []byte("h"), Roles: []string{user.RoleSuperAdmin}, CreatedAt: created, UpdatedAt: created}
	if err := s.CreateUser(t.Context(), u); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = openTest(t, Config{Path: path})
	got, err := s.UserByUsername(t.Context(), "admin")
	if err != nil {
		t.Fatalf("UserByUsername after reopening: %v", err)
	}
	if diff := cmp.Diff(u, got); diff != "" {
		t.Errorf("user after reopening (-want +got):\n%s", diff)
	}
}

func TestOpenDoesNotMigrate(t *testing.T) {
	s := openTest(t, Config{})
	status, err := s.MigrationStatus(t.Context())
	if err != nil {
		t.Fatalf("MigrationStatus: %v", err)
	}
	if len(status) == 0 {
		t.Fatal("MigrationStatus lists no migration")
	}
	for _, m := range status {
		if m.Applied {
			t.Errorf("migration %d applied by Open", m.Version)
		}
	}
}

func TestOpenRejectsBadConfig(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		cfg  Config
	}{
		{"empty path", Config{}},
		{"in-memory database", Config{Path: ":memory:"}},
		{"URI", Config{Path: "file:" + filepath.Join(dir, "x.db")}},
		{"query in path", Config{Path: filepath.Join(dir, "x.db?mode=ro")}},
		{"negative busy timeout", Config{Path: filepath.Join(dir, "x.db"), BusyTimeout: -time.Second}},
		{"path is a directory", Config{Path: dir}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Open(t.Context(), tt.cfg, nil)
			if err == nil {
				_ = s.Close()
				t.Fatal("Open succeeded, want an error")
			}
		})
	}
}

// TestWriterTransactionsLockAtBegin holds the write lock from another connection, as another
// process could, and checks that a writer transaction fails at BEGIN, before doing any work,
// rather than at its first write.
func TestWriterTransactionsLockAtBegin(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nops.db")
	s := openMigrated(t, Config{Path: path, BusyTimeout: 50 * time.Millisecond})
	ctx := t.Context()
	other, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatalf("open second handle: %v", err)
	}
	defer other.Close()
	conn, err := other.Conn(ctx)
	if err != nil {
		t.Fatalf("second handle conn: %v", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatalf("BEGIN IMMEDIATE: %v", err)
	}
	defer func() { _, _ = conn.ExecContext(ctx, "ROLLBACK") }()

	tx, err := s.writer.BeginTx(ctx, nil)
	if err == nil {
		_ = tx.Rollback()
		t.Fatal("BeginTx succeeded while another connection holds the write lock, want SQLITE_BUSY")
	}
}
