package migrate

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"testing/fstest"

	"github.com/google/go-cmp/cmp"
	"github.com/pressly/goose/v3"
	"go.uber.org/goleak"
	_ "modernc.org/sqlite"

	"github.com/nops-kernel/nops/internal/errs"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	createA = "-- +goose Up\nCREATE TABLE a (id INTEGER);\n-- +goose Down\nDROP TABLE a;\n"
	createB = "-- +goose Up\nCREATE TABLE b (id INTEGER);\n-- +goose Down\nDROP TABLE b;\n"
)

// newTest returns a Migrator over files on a fresh SQLite database, and the JSON log lines it
// writes.
func newTest(t *testing.T, files fstest.MapFS) (*Migrator, *bytes.Buffer) {
	t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { _ = db.Close() })
	var logs bytes.Buffer
	m, err := New(goose.DialectSQLite3, db, files, slogJSON(&logs))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return m, &logs
}

type logLine struct {
	Msg       string `json:"msg"`
	Direction string `json:"direction"`
	Version   int64  `json:"version"`
	Name      string `json:"name"`
	HasError  bool   `json:"-"`
	Error     string `json:"error"`
}

func readLogs(t *testing.T, b *bytes.Buffer) []logLine {
	t.Helper()
	var out []logLine
	dec := json.NewDecoder(b)
	for dec.More() {
		var l logLine
		if err := dec.Decode(&l); err != nil {
			t.Fatalf("decode log line: %v", err)
		}
		l.HasError, l.Error = l.Error != "", ""
		out = append(out, l)
	}
	return out
}

type status struct {
	Version int64
	Name    string
	Applied bool
}

func readStatus(t *testing.T, m *Migrator) []status {
	t.Helper()
	list, err := m.Status(t.Context())
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	var out []status
	for _, s := range list {
		out = append(out, status{s.Version, s.Name, s.Applied})
		if s.Applied == s.AppliedAt.IsZero() {
			t.Errorf("migration %d: applied %v with AppliedAt %v", s.Version, s.Applied, s.AppliedAt)
		}
	}
	return out
}

func TestUpDownAndLogs(t *testing.T) {
	m, logs := newTest(t, fstest.MapFS{
		"00001_a.sql": {Data: []byte(createA)},
		"00002_b.sql": {Data: []byte(createB)},
	})
	ctx := t.Context()
	if err := m.Up(ctx); err != nil {
		t.Fatalf("Up: %v", err)
	}
	if err := m.Down(ctx); err != nil {
		t.Fatalf("Down: %v", err)
	}
	want := []status{{1, "00001_a.sql", true}, {2, "00002_b.sql", false}}
	if diff := cmp.Diff(want, readStatus(t, m)); diff != "" {
		t.Errorf("status (-want +got):\n%s", diff)
	}
	wantLogs := []logLine{
		{Msg: "migration applied", Direction: "up", Version: 1, Name: "00001_a.sql"},
		{Msg: "migration applied", Direction: "up", Version: 2, Name: "00002_b.sql"},
		{Msg: "migration applied", Direction: "down", Version: 2, Name: "00002_b.sql"},
	}
	if diff := cmp.Diff(wantLogs, readLogs(t, logs)); diff != "" {
		t.Errorf("logs (-want +got):\n%s", diff)
	}
}

func TestDownWithNothingAppliedIsConflict(t *testing.T) {
	m, _ := newTest(t, fstest.MapFS{"00001_a.sql": {Data: []byte(createA)}})
	if err := m.Down(t.Context()); errs.CodeOf(err) != errs.Conflict {
		t.Fatalf("Down on a new database: error %v, want code %q", err, errs.Conflict)
	}
}

// TestFailedUpLogsWhatRan checks that a failing migration leaves the ones before it applied and
// that both are logged, although goose returns no results with the error.
func TestFailedUpLogsWhatRan(t *testing.T) {
	m, logs := newTest(t, fstest.MapFS{
		"00001_a.sql":       {Data: []byte(createA)},
		"00002_again_a.sql": {Data: []byte(createA)}, // table a exists: fails
	})
	if err := m.Up(t.Context()); err == nil {
		t.Fatal("Up with a failing migration succeeded")
	}
	want := []status{{1, "00001_a.sql", true}, {2, "00002_again_a.sql", false}}
	if diff := cmp.Diff(want, readStatus(t, m)); diff != "" {
		t.Errorf("status (-want +got):\n%s", diff)
	}
	wantLogs := []logLine{
		{Msg: "migration applied", Direction: "up", Version: 1, Name: "00001_a.sql"},
		{Msg: "migration failed", Direction: "up", Version: 2, Name: "00002_again_a.sql", HasError: true},
	}
	if diff := cmp.Diff(wantLogs, readLogs(t, logs)); diff != "" {
		t.Errorf("logs (-want +got):\n%s", diff)
	}
}

func TestNewWithoutMigrations(t *testing.T) {
	db, err := sql.Open("sqlite", filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer db.Close()
	if _, err := New(goose.DialectSQLite3, db, fstest.MapFS{}, slogJSON(&bytes.Buffer{})); err == nil {
		t.Fatal("New with no migrations succeeded, want an error")
	}
}

func slogJSON(w io.Writer) *slog.Logger { return slog.New(slog.NewJSONHandler(w, nil)) }

// TestIgnoresGlobalGoMigrations registers a Go migration in goose's process-wide registry, as any
// package of the binary could from an init function, and checks that the Migrator ignores it.
func TestIgnoresGlobalGoMigrations(t *testing.T) {
	goose.AddNamedMigrationContext("00003_global.go",
		func(context.Context, *sql.Tx) error { return nil },
		func(context.Context, *sql.Tx) error { return nil })
	m, _ := newTest(t, fstest.MapFS{"00001_a.sql": {Data: []byte(createA)}})
	if err := m.Up(t.Context()); err != nil {
		t.Fatalf("Up: %v", err)
	}
	want := []status{{1, "00001_a.sql", true}}
	if diff := cmp.Diff(want, readStatus(t, m)); diff != "" {
		t.Errorf("status (-want +got):\n%s", diff)
	}
}
