package ratelimit_test

import (
	"testing"
	"time"

	"github.com/dunglas/httpsfv"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/ratelimit"
)

func TestHeaders(t *testing.T) {
	tests := []struct {
		name             string
		d                ratelimit.Decision
		rl, policy       string
		retryAfterSecond time.Duration
	}{
		{"allowed", ratelimit.Decision{Allowed: true, Rule: "per_ip", Limit: 100, Period: time.Minute, Remaining: 42, Reset: 16200 * time.Millisecond},
			`"per_ip";r=42;t=17`, `"per_ip";q=100;w=60`, 0},
		{"refused: t is Retry-After", ratelimit.Decision{Rule: "class_auth", Limit: 10, Period: 90 * time.Second, Reset: 90 * time.Second, RetryAfter: 8500 * time.Millisecond},
			`"class_auth";r=0;t=9`, `"class_auth";q=10;w=90`, 9 * time.Second},
		{"refused under a second: at least 1", ratelimit.Decision{Rule: "global", Limit: 1000, Period: time.Second, RetryAfter: time.Millisecond},
			`"global";r=0;t=1`, `"global";q=1000;w=1`, time.Second},
		{"sub-second period rounds up", ratelimit.Decision{Allowed: true, Rule: "r", Limit: 1, Period: 1500 * time.Millisecond, Remaining: 0, Reset: 1500 * time.Millisecond},
			`"r";r=0;t=2`, `"r";q=1;w=2`, 0},
		{"no rule: no fields", ratelimit.Decision{Allowed: true}, "", "", 0},
		{"quote and backslash escaped", ratelimit.Decision{Allowed: true, Rule: `a"b\c`, Limit: 5, Period: time.Second, Remaining: 4, Reset: time.Second},
			`"a\"b\\c";r=4;t=1`, `"a\"b\\c";q=5;w=1`, 0},
		{"not an SF String: no fields", ratelimit.Decision{Allowed: true, Rule: "règle", Limit: 5, Period: time.Second}, "", "", 0},
		{"negative remaining shown as 0", ratelimit.Decision{Allowed: true, Rule: "per_ip", Limit: 5, Period: time.Second, Remaining: -3, Reset: 2 * time.Second},
			`"per_ip";r=0;t=2`, `"per_ip";q=5;w=1`, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rl, policy := ratelimit.Headers(tt.d)
			if rl != tt.rl || policy != tt.policy {
				t.Fatalf("Headers = %q, %q; want %q, %q", rl, policy, tt.rl, tt.policy)
			}
			if tt.retryAfterSecond > 0 { // Retry-After and t agree
				if e := errs.As(tt.d.Refusal()); e == nil || e.RetryAfter != tt.retryAfterSecond {
					t.Fatalf("Refusal = %v, want RetryAfter %v", tt.d.Refusal(), tt.retryAfterSecond)
				}
			}
			if rl == "" {
				return
			}
			// Both parse back as Structured Field Lists of one String Item with Integer params.
			for _, v := range []string{rl, policy} {
				l, err := httpsfv.UnmarshalList([]string{v})
				if err != nil || len(l) != 1 {
					t.Fatalf("%q does not parse as a one-item List: %v", v, err)
				}
				item, ok := l[0].(httpsfv.Item)
				if !ok || item.Value != tt.d.Rule {
					t.Fatalf("%q: item %+v, want the String %q", v, l[0], tt.d.Rule)
				}
			}
		})
	}
}
