package relay

import (
	"testing"
	"time"
)

func TestTraceParent(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	tests := []struct {
		name, payload, want string
	}{
		{"present", `{"id":"e","traceparent":"` + tp + `","data":{"traceparent":"x"}}`, tp},
		{"flags zero", `{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"}`, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"},
		{"absent", `{"id":"e","data":{"traceparent":"` + tp + `"}}`, ""},
		{"null", `{"traceparent":null}`, ""},
		{"not a string", `{"traceparent":42}`, ""},
		{"upper case", `{"traceparent":"00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01"}`, ""},
		{"zero trace id", `{"traceparent":"00-00000000000000000000000000000000-00f067aa0ba902b7-01"}`, ""},
		{"zero parent id", `{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"}`, ""},
		{"other version", `{"traceparent":"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}`, ""},
		{"line break", `{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0\n"}`, ""},
		{"not JSON", `traceparent`, ""},
		{"an array", `["traceparent"]`, ""},
		{"events layout", `{"specversion":"1.0","id":"e","tenant":"t","traceparent":"` + tp + `","data":{"traceparent":"x"}}`, tp},
		{"events layout, absent", `{"specversion":"1.0","id":"e","tenant":"t","data":{"traceparent":"` + tp + `"}}`, ""},
		{"events layout, invalid", `{"specversion":"1.0","id":"e","traceparent":"00-0-0-01","data":{}}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := traceParent([]byte(tt.payload)); got != tt.want {
				t.Errorf("traceParent = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	b := backoff{initial: 100 * time.Millisecond, max: time.Second}
	for i, ceiling := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		ceiling *= time.Millisecond
		d := b.next()
		if d < ceiling/2 || d > ceiling {
			t.Errorf("wait %d = %v, want within [%v, %v]", i+1, d, ceiling/2, ceiling)
		}
	}
	b.reset()
	if d := b.next(); d > 100*time.Millisecond {
		t.Errorf("wait after reset = %v, want at most 100ms", d)
	}
}
