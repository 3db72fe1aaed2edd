package postgres

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/nops-kernel/nops/internal/store/storetest"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// openTest opens a store on url and closes it when the test ends.
func openTest(t *testing.T, cfg Config) *Store {
	t.Helper()
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

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Store {
		s := openTest(t, Config{URL: services.Postgres(t), MaxConns: 4})
		if err := s.MigrateUp(t.Context()); err != nil {
			t.Fatalf("MigrateUp: %v", err)
		}
		return s
	})
}

func TestPoolConfig(t *testing.T) {
	s := openTest(t, Config{
		URL: services.Postgres(t), MaxConns: 7, MinConns: 2, ConnectTimeout: 3 * time.Second,
		MaxConnLifetime: 11 * time.Minute, MaxConnIdleTime: 13 * time.Second,
	})
	type poolConfig struct {
		MaxConns, MinConns                               int32
		ConnectTimeout, MaxConnLifetime, MaxConnIdleTime time.Duration
	}
	c := s.pool.Config()
	got := poolConfig{c.MaxConns, c.MinConns, c.ConnConfig.ConnectTimeout, c.MaxConnLifetime, c.MaxConnIdleTime}
	want := poolConfig{7, 2, 3 * time.Second, 11 * time.Minute, 13 * time.Second}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("pool config (-want +got):\n%s", diff)
	}
	var tz string
	if err := s.pool.QueryRow(t.Context(), "SHOW timezone").Scan(&tz); err != nil {
		t.Fatalf("SHOW timezone: %v", err)
	}
	if tz != "UTC" {
		t.Errorf("session timezone = %q, want UTC", tz)
	}
}

// TestConcurrentMigrateUp starts several stores on one database migrating at once, as replicas
// starting together do: the advisory lock lets each migration run exactly once.
func TestConcurrentMigrateUp(t *testing.T) {
	url := services.Postgres(t)
	const replicas = 3
	stores := make([]*Store, replicas)
	for i := range stores {
		stores[i] = openTest(t, Config{URL: url, MaxConns: 2})
		// Have each create goose's version table first (goose retries that step by itself), so
		// that the MigrateUp calls below overlap on the migrations proper.
		if _, err := stores[i].MigrationStatus(t.Context()); err != nil {
			t.Fatalf("MigrationStatus: %v", err)
		}
	}
	var wg sync.WaitGroup
	errc := make(chan error, replicas)
	for _, s := range stores {
		wg.Go(func() { errc <- s.MigrateUp(t.Context()) })
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			t.Errorf("MigrateUp: %v", err)
		}
	}
	status, err := stores[0].MigrationStatus(t.Context())
	if err != nil {
		t.Fatalf("MigrationStatus: %v", err)
	}
	for _, m := range status {
		if !m.Applied {
			t.Errorf("migration %d not applied", m.Version)
		}
	}
	var rows int
	if err := stores[0].pool.QueryRow(t.Context(), "SELECT count(*) FROM goose_db_version WHERE version_id > 0").Scan(&rows); err != nil {
		t.Fatalf("count applied versions: %v", err)
	}
	if rows != len(status) {
		t.Errorf("goose_db_version holds %d applied versions, want %d (each applied once)", rows, len(status))
	}
}

// blackhole accepts TCP connections and never answers, like a server that hangs.
func blackhole(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		done  = make(chan struct{})
	)
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return ln.Addr().String()
}

func TestOpenFailsWhenUnreachable(t *testing.T) {
	const password = "s3cr3t-Pa55"
	const timeout = 300 * time.Millisecond
	tests := []struct {
		name string
		host string
	}{
		{"connection refused", "127.0.0.1:1"},
		{"server never answers", blackhole(t)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := "postgres://nops:" + password + "@" + tt.host + "/nops?sslmode=disable&password=" + password
			start := time.Now()
			// No deadline on the context: only ConnectTimeout bounds Open.
			s, err := Open(context.Background(), Config{URL: url, ConnectTimeout: timeout}, nil)
			elapsed := time.Since(start)
			if err == nil {
				_ = s.Close()
				t.Fatal("Open succeeded, want an error")
			}
			// Generous: only a missing bound (Open hanging) should fail this.
			if elapsed > timeout+5*time.Second {
				t.Errorf("Open took %v with a %v connect timeout", elapsed, timeout)
			}
			if strings.Contains(err.Error(), password) {
				t.Errorf("error %q contains the password", err)
			}
			if !strings.Contains(err.Error(), tt.host) || !strings.Contains(err.Error(), "xxxxx") {
				t.Errorf("error %q does not name the redacted URL", err)
			}
			if errors.Unwrap(err) == nil {
				t.Errorf("error %q wraps no cause", err)
			}
		})
	}
}

func TestOpenRejectsBadConfig(t *testing.T) {
	const password = "s3cr3t-Pa55"
	tests := []struct {
		name string
		cfg  Config
	}{
		{"bad port", Config{URL: "postgres://nops:" + password + "@127.0.0.1:notaport/nops"}},
		{"unparsable URL", Config{URL: "postgres://nops:" + password + "@127.0.0.1:5432/nops%zz"}},
		{"negative connect timeout", Config{URL: "postgres://nops:" + password + "@127.0.0.1:1/nops", ConnectTimeout: -time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Open(t.Context(), tt.cfg, nil)
			if err == nil {
				_ = s.Close()
				t.Fatal("Open succeeded, want an error")
			}
			if strings.Contains(err.Error(), password) {
				t.Errorf("error %q contains the password", err)
			}
		})
	}
}
