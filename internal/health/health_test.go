package health_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/nops-kernel/nops/internal/health"
)

// syncBuffer collects log lines written from probe rounds.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// records decodes the JSON log lines written so far.
func (s *syncBuffer) records(t *testing.T) []map[string]any {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for line := range strings.Lines(s.b.String()) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, rec)
	}
	return out
}

func up(context.Context) error { return nil }

// fakeClock is a settable Options.Now.
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

func TestReport(t *testing.T) {
	// In a synctest bubble time only moves when every goroutine waits, so latencies are exact.
	synctest.Test(t, func(t *testing.T) {
		const timeout = time.Second
		hang := make(chan struct{})
		defer close(hang)
		checks := []health.Check{
			{Name: "db", Probe: up},
			{Name: "refused", Probe: func(context.Context) error { return errors.New("dial tcp 10.0.0.7:5432: connection refused") }},
			{Name: "slow-but-fine", Probe: func(ctx context.Context) error {
				time.Sleep(timeout / 2)
				return nil
			}},
			{Name: "honours-deadline", Probe: func(ctx context.Context) error {
				<-ctx.Done()
				return fmt.Errorf("query: %w", ctx.Err())
			}},
			{Name: "ignores-deadline", Probe: func(context.Context) error {
				<-hang
				return nil
			}},
			{Name: "net-timeout", Probe: func(context.Context) error {
				return fmt.Errorf("read: %w", os.ErrDeadlineExceeded)
			}},
		}
		c := health.New(checks, health.Options{Timeout: timeout})
		start := time.Now()
		got := c.Check(t.Context())
		// Probes run in parallel: the round takes one Timeout, not the sum.
		if d := time.Since(start); d != timeout {
			t.Errorf("round took %s, want %s", d, timeout)
		}
		want := health.Report{Ready: false, Checks: []health.Result{
			{Name: "db", Up: true, CheckedAt: start},
			{Name: "refused", Error: "unavailable", CheckedAt: start},
			{Name: "slow-but-fine", Up: true, Latency: timeout / 2, CheckedAt: start},
			{Name: "honours-deadline", Error: "timeout", Latency: timeout, CheckedAt: start},
			{Name: "ignores-deadline", Error: "timeout", Latency: timeout, CheckedAt: start},
			{Name: "net-timeout", Error: "timeout", CheckedAt: start},
		}}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("report (-want +got):\n%s", diff)
		}
	})
}

func TestReady(t *testing.T) {
	down := func(context.Context) error { return errors.New("down") }
	tests := []struct {
		name   string
		probes []func(context.Context) error
		want   bool
	}{
		{"no checks", nil, true},
		{"all up", []func(context.Context) error{up, up}, true},
		{"one down", []func(context.Context) error{up, down}, false},
		{"all down", []func(context.Context) error{down, down}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var checks []health.Check
			for i, p := range tt.probes {
				checks = append(checks, health.Check{Name: fmt.Sprint("c", i), Probe: p})
			}
			got := health.New(checks, health.Options{}).Check(t.Context())
			if got.Ready != tt.want {
				t.Fatalf("Ready = %v, want %v", got.Ready, tt.want)
			}
			if len(got.Checks) != len(tt.probes) {
				t.Fatalf("%d results for %d checks", len(got.Checks), len(tt.probes))
			}
		})
	}
}

func TestCachesForTTL(t *testing.T) {
	clock := &fakeClock{now: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
	var calls atomic.Int32
	c := health.New([]health.Check{{Name: "db", Probe: func(context.Context) error {
		calls.Add(1)
		return nil
	}}}, health.Options{TTL: time.Second, Now: clock.Now})

	steps := []struct {
		advance   time.Duration
		wantCalls int32
	}{
		{0, 1},
		{0, 1},
		{999 * time.Millisecond, 1},
		{time.Millisecond, 2}, // expired exactly at TTL
		{500 * time.Millisecond, 2},
		{10 * time.Second, 3},
	}
	for i, s := range steps {
		clock.Advance(s.advance)
		r := c.Check(t.Context())
		if got := calls.Load(); got != s.wantCalls {
			t.Fatalf("step %d: %d probe calls, want %d", i, got, s.wantCalls)
		}
		if !r.Ready {
			t.Fatalf("step %d: not ready", i)
		}
	}
}

func TestCallersCannotChangeTheCache(t *testing.T) {
	c := health.New([]health.Check{{Name: "db", Probe: up}}, health.Options{TTL: time.Hour})
	first := c.Check(t.Context())
	first.Checks[0].Up = false
	first.Checks[0].Name = "mangled"
	second := c.Check(t.Context())
	if diff := cmp.Diff("db", second.Checks[0].Name); diff != "" || !second.Checks[0].Up {
		t.Fatalf("cached report changed by a caller: %+v", second)
	}
}

func TestDefaults(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls atomic.Int32
		c := health.New([]health.Check{{Name: "hangs", Probe: func(ctx context.Context) error {
			calls.Add(1)
			<-ctx.Done()
			return ctx.Err()
		}}}, health.Options{})
		start := time.Now()
		r := c.Check(t.Context())
		if d := time.Since(start); d != health.DefaultTimeout {
			t.Fatalf("round took %s, want the default timeout %s", d, health.DefaultTimeout)
		}
		if r.Ready || r.Checks[0].Error != health.ReasonTimeout {
			t.Fatalf("report %+v, want a timeout", r)
		}
		time.Sleep(health.DefaultTTL - time.Nanosecond)
		c.Check(t.Context())
		if n := calls.Load(); n != 1 {
			t.Fatalf("%d calls within the default TTL, want 1", n)
		}
	})
}

func TestConcurrentCallersShareOneRound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls atomic.Int32
		release := make(chan struct{})
		c := health.New([]health.Check{{Name: "db", Probe: func(context.Context) error {
			calls.Add(1)
			<-release
			return nil
		}}}, health.Options{Timeout: time.Minute})

		const callers = 50
		reports := make(chan health.Report, callers)
		for range callers {
			go func() { reports <- c.Check(context.Background()) }()
		}
		synctest.Wait() // every caller is now blocked: in the probe or waiting for its round
		if n := calls.Load(); n != 1 {
			t.Fatalf("%d probe calls with %d concurrent callers, want 1", n, callers)
		}
		close(release)
		for range callers {
			if r := <-reports; !r.Ready {
				t.Fatalf("caller got %+v", r)
			}
		}
		if n := calls.Load(); n != 1 {
			t.Fatalf("%d probe calls, want 1", n)
		}
	})
}

type ctxKey struct{}

func TestRoundSurvivesCallerCancellation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls atomic.Int32
		release := make(chan struct{})
		c := health.New([]health.Check{{Name: "db", Probe: func(ctx context.Context) error {
			calls.Add(1)
			if ctx.Value(ctxKey{}) != "request-1" {
				return errors.New("caller's context values were not passed on")
			}
			<-release
			return ctx.Err() // nil unless the caller's cancellation reached the probe
		}}}, health.Options{TTL: time.Hour, Timeout: time.Minute})

		ctx, cancel := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "request-1"))
		first := make(chan health.Report, 1)
		go func() { first <- c.Check(ctx) }()
		synctest.Wait()
		cancel() // the caller goes away while its round is in flight
		close(release)
		if r := <-first; !r.Ready {
			t.Fatalf("round started by a cancelled caller: %+v", r)
		}
		// A caller whose context is already cancelled still gets the cached round.
		if r := c.Check(ctx); !r.Ready {
			t.Fatalf("cancelled caller: %+v", r)
		}
		if n := calls.Load(); n != 1 {
			t.Fatalf("%d probe calls, want 1", n)
		}
	})
}

func TestStuckProbeIsNotStartedAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls atomic.Int32
		unblock := make(chan struct{})
		const ttl, timeout = time.Second, 2 * time.Second
		c := health.New([]health.Check{{Name: "db", Probe: func(context.Context) error {
			calls.Add(1)
			<-unblock // ignores its context
			return nil
		}}}, health.Options{TTL: ttl, Timeout: timeout})

		if r := c.Check(t.Context()); r.Checks[0].Error != health.ReasonTimeout || r.Checks[0].Latency != timeout {
			t.Fatalf("first round %+v, want a timeout after %s", r, timeout)
		}
		time.Sleep(ttl)
		start := time.Now()
		r := c.Check(t.Context())
		if r.Checks[0].Error != health.ReasonTimeout || time.Since(start) != 0 {
			t.Fatalf("second round %+v after %s, want an immediate timeout", r, time.Since(start))
		}
		if n := calls.Load(); n != 1 {
			t.Fatalf("%d probe calls while the first is stuck, want 1", n)
		}
		close(unblock)
		synctest.Wait()
		time.Sleep(ttl)
		if r := c.Check(t.Context()); !r.Ready {
			t.Fatalf("round after the probe returned: %+v", r)
		}
		if n := calls.Load(); n != 2 {
			t.Fatalf("%d probe calls, want 2", n)
		}
	})
}

func TestPanickingProbe(t *testing.T) {
	var logs syncBuffer
	c := health.New([]health.Check{
		{Name: "bad", Probe: func(context.Context) error { panic("boom") }},
		{Name: "good", Probe: up},
	}, health.Options{Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	r := c.Check(t.Context())
	want := []health.Result{{Name: "bad", Error: "unavailable"}, {Name: "good", Up: true}}
	if diff := cmp.Diff(want, r.Checks, cmpopts.IgnoreFields(health.Result{}, "Latency", "CheckedAt")); diff != "" {
		t.Fatalf("results (-want +got):\n%s", diff)
	}
	recs := logs.records(t)
	if len(recs) != 1 || !strings.Contains(fmt.Sprint(recs[0]["error"]), "panicked: boom") {
		t.Fatalf("logs %v, want one line naming the panic", recs)
	}
}

func TestLogsTransitionsWithoutLeakingErrors(t *testing.T) {
	const secret = "postgres://admin:hunter2@10.0.0.7:5432/prod"
	clock := &fakeClock{now: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
	var failing atomic.Bool
	var logs syncBuffer
	c := health.New([]health.Check{{Name: "database", Probe: func(context.Context) error {
		if failing.Load() {
			return fmt.Errorf("connect %s: connection refused", secret)
		}
		return nil
	}}}, health.Options{TTL: time.Second, Logger: slog.New(slog.NewJSONHandler(&logs, nil)), Now: clock.Now})

	type logLine struct{ Level, Msg, Check, Reason string }
	for i, state := range []string{"up", "down", "down", "up", "up", "down"} {
		failing.Store(state == "down")
		r := c.Check(t.Context())
		if r.Ready != (state == "up") {
			t.Fatalf("round %d: Ready = %v, want %s", i, r.Ready, state)
		}
		if s := fmt.Sprintf("%+v", r); strings.Contains(s, "hunter2") || strings.Contains(s, "10.0.0.7") {
			t.Fatalf("round %d: report leaks the raw error: %s", i, s)
		}
		clock.Advance(time.Second)
	}
	wantLogs := []logLine{
		{"WARN", "readiness check down", "database", "unavailable"},
		{"INFO", "readiness check up", "database", ""},
		{"WARN", "readiness check down", "database", "unavailable"},
	}
	var gotLogs []logLine
	for _, rec := range logs.records(t) {
		l := logLine{Level: fmt.Sprint(rec["level"]), Msg: fmt.Sprint(rec["msg"]), Check: fmt.Sprint(rec["check"])}
		if reason, ok := rec["reason"]; ok {
			l.Reason = fmt.Sprint(reason)
		}
		if l.Level == "WARN" && !strings.Contains(fmt.Sprint(rec["error"]), secret) {
			t.Errorf("warn line %v lacks the raw error operators need", rec)
		}
		gotLogs = append(gotLogs, l)
	}
	if diff := cmp.Diff(wantLogs, gotLogs); diff != "" {
		t.Fatalf("log lines (-want +got):\n%s", diff)
	}
}

func TestNewRejectsBadChecks(t *testing.T) {
	tests := []struct {
		name   string
		checks []health.Check
	}{
		{"no name", []health.Check{{Probe: up}}},
		{"duplicate", []health.Check{{Name: "db", Probe: up}, {Name: "db", Probe: up}}},
		{"no probe", []health.Check{{Name: "db"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("New accepted the checks")
				}
			}()
			health.New(tt.checks, health.Options{})
		})
	}
}
