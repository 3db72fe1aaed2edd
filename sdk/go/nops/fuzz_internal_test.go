package nops

import (
	"testing"
	"time"
)

// FuzzRetryAfter feeds the Retry-After parser what a server (or anything between) may send: it
// never panics, never returns a negative wait, and caps delay-seconds at a day.
func FuzzRetryAfter(f *testing.F) {
	for _, s := range []string{"1", "0", "120", "-1", "Wed, 21 Oct 2015 07:28:00 GMT", "soon", "", " 3 ", "99999999999999999999", "1.5"} {
		f.Add(s)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, v string) {
		d, ok := retryAfter(v, now)
		if d < 0 {
			t.Fatalf("retryAfter(%q) = %s", v, d)
		}
		if !ok && d != 0 {
			t.Fatalf("retryAfter(%q) = %s without a value", v, d)
		}
	})
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"3", 3 * time.Second, true},
		{" 0 ", 0, true},
		{"Thu, 01 Jan 2026 00:00:30 GMT", 30 * time.Second, true},
		{"Wed, 31 Dec 2025 00:00:00 GMT", 0, true}, // a date in the past: retry now
		{"999999999", 24 * time.Hour, true},
		{"-5", 0, false},
		{"later", 0, false},
		{"", 0, false},
	} {
		if d, ok := retryAfter(tc.in, now); d != tc.want || ok != tc.ok {
			t.Errorf("retryAfter(%q) = %s, %v; want %s, %v", tc.in, d, ok, tc.want, tc.ok)
		}
	}
}

// TestBackoff checks full jitter: every delay is within [0, min(MaxDelay, BaseDelay·2^(n-1))].
func TestBackoff(t *testing.T) {
	p := RetryPolicy{BaseDelay: 100 * time.Millisecond, MaxDelay: time.Second}.withDefaults()
	for n := 1; n <= 10; n++ {
		ceiling := min(p.BaseDelay<<(n-1), p.MaxDelay)
		for range 200 {
			if d := p.backoff(n); d < 0 || d > ceiling {
				t.Fatalf("backoff(%d) = %s, want within [0, %s]", n, d, ceiling)
			}
		}
	}
}

// TestWindowFigures checks the heartbeat figures over the invocation window: nearest-rank
// percentiles, the share of 5xx answers, and only the last windowSize invocations counted.
func TestWindowFigures(t *testing.T) {
	var w window
	if _, _, _, ok := w.figures(); ok {
		t.Fatal("figures before any invocation")
	}
	for i := 1; i <= 100; i++ {
		status := 200
		if i%10 == 0 {
			status = 503
		} else if i%10 == 5 {
			status = 404 // a client error is not the agent's failure
		}
		w.add(time.Duration(i)*time.Millisecond, status)
	}
	p50, p95, er, ok := w.figures()
	if !ok || p50 != 51*time.Millisecond || p95 != 96*time.Millisecond || er != 0.1 {
		t.Fatalf("figures %s %s %v %v", p50, p95, er, ok)
	}
	for range windowSize {
		w.add(time.Millisecond, 200)
	}
	if p50, p95, er, _ := w.figures(); p50 != time.Millisecond || p95 != time.Millisecond || er != 0 {
		t.Fatalf("figures after the window turned over: %s %s %v", p50, p95, er)
	}
}
