package main

import (
	"bytes"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/nops-kernel/nops/internal/testutil/services"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The smoke tests run every phase for a moment so that the program keeps compiling and working;
// they check that a report comes out, never how fast anything was.

func TestRunSQLite(t *testing.T) {
	parent := t.TempDir()
	out := smoke(t, options{Stores: []string{"sqlite"}, DataDir: parent})
	entries, err := os.ReadDir(parent)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("the run left %d entries in its data directory's parent", len(entries))
	}
	for _, want := range []string{"bare upsert, synchronous=NORMAL", "32 per transaction", "Heartbeat goal"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

func TestRunPostgres(t *testing.T) {
	out := smoke(t, options{Stores: []string{"postgres"}, PGURL: services.PostgresURL(t)})
	if !strings.Contains(out, "bare upsert, synchronous_commit=off") {
		t.Errorf("report lacks the synchronous_commit=off variant:\n%s", out)
	}
}

// smoke runs o for a moment with every phase, variant and background loop, and returns the
// report after checking it has a row per phase.
func smoke(t *testing.T, o options) string {
	t.Helper()
	o.Duration, o.Warmup = 150*time.Millisecond, 20*time.Millisecond
	o.Concurrency, o.Agents, o.Tenants = 3, 5, 2
	o.Background, o.Variants = true, true
	var out bytes.Buffer
	if err := run(t.Context(), o, &out, io.Discard); err != nil {
		t.Fatalf("run: %v", err)
	}
	for _, want := range []string{
		"| bare upsert (baseline, before) |",
		"| heartbeat: control.Heartbeat |",
		"| audited registration: control.RegisterAgent |",
		"| bare upsert (baseline, after) |",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	return out.String()
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		args    []string
		stores  string
		wantErr string
	}{
		{args: nil, stores: "sqlite"},
		{args: []string{"-store", "sqlite, postgres,sqlite", "-pg-url", "postgres://x/y"}, stores: "sqlite,postgres"},
		{args: []string{"-store", "postgres"}, wantErr: "-pg-url is required"},
		{args: []string{"-store", "mysql"}, wantErr: "unknown store"},
		{args: []string{"-duration", "0s"}, wantErr: "-duration"},
		{args: []string{"-concurrency", "0"}, wantErr: "-concurrency"},
		{args: []string{"-agents", "0"}, wantErr: "-agents"},
		{args: []string{"-tenants", "0"}, wantErr: "-tenants"},
		{args: []string{"extra"}, wantErr: "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			o, err := parseFlags(tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseFlags error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(o.Stores, ","); got != tt.stores {
				t.Errorf("stores = %q, want %q", got, tt.stores)
			}
		})
	}
}
