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
