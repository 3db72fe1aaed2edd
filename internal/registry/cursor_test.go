package registry_test

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/registry"
)

const someAgentID = "agt_01jz8y3w6v6r3b5q8x9k2m4n7q"

func TestCursorRoundTrip(t *testing.T) {
	tests := []registry.Cursor{
		{CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 123456000, time.UTC), ID: someAgentID},
		{CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), ID: someAgentID},
		{CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("x", -5*3600)), ID: someAgentID},
	}
	for _, c := range tests {
		s := registry.EncodeCursor(c)
		if strings.ContainsAny(s, "+/=") {
			t.Errorf("EncodeCursor = %q, not URL-safe unpadded", s)
		}
		got, err := registry.DecodeCursor(s)
		if err != nil {
			t.Fatalf("DecodeCursor(%q): %v", s, err)
		}
		if diff := cmp.Diff(c, got); diff != "" {
			t.Errorf("round trip (-want +got):\n%s", diff)
		}
	}
	a := registry.Agent{ID: someAgentID, CreatedAt: tests[0].CreatedAt}
	if diff := cmp.Diff(tests[0], registry.CursorOf(a)); diff != "" {
		t.Errorf("CursorOf (-want +got):\n%s", diff)
	}
}

func TestDecodeCursorTampered(t *testing.T) {
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	good := registry.EncodeCursor(registry.Cursor{CreatedAt: time.Unix(1700000000, 0), ID: someAgentID})
	flipped := []byte(good)
	flipped[5] ^= 0x01
	tests := map[string]string{
		"empty":           "",
		"bit flip":        string(flipped),
		"truncated":       good[:len(good)-2],
		"appended":        good + "AA",
		"padding":         good + "=",
		"std alphabet":    "+/" + good,
		"not base64":      "%%%",
		"not json":        enc("1700000000:" + someAgentID),
		"unknown field":   enc(`{"t":"2026-01-01T00:00:00Z","i":"` + someAgentID + `","tenant":"ten_x"}`),
		"trailing":        enc(`{"t":"2026-01-01T00:00:00Z","i":"` + someAgentID + `"} x`),
		"tenant id":       enc(`{"t":"2026-01-01T00:00:00Z","i":"ten_01jz8y3w6v6r3b5q8x9k2m4n7q"}`),
		"injected id":     enc(`{"t":"2026-01-01T00:00:00Z","i":"agt_' OR '1'='1"}`),
		"before 1970":     enc(`{"t":"1969-12-31T23:59:59Z","i":"` + someAgentID + `"}`),
		"past year 9999":  enc(`{"t":"9999-12-31T23:00:00-05:00","i":"` + someAgentID + `"}`),
		"time not string": enc(`{"t":null,"i":"` + someAgentID + `"}`),
		"huge":            strings.Repeat("A", 10000),
	}
	for name, s := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := registry.DecodeCursor(s)
			e := errs.As(err)
			if e == nil || e.Code != errs.Invalid || len(e.Fields) != 1 || e.Fields[0].Name != "query.cursor" {
				t.Fatalf("DecodeCursor = %v, want errs.Field(query.cursor)", err)
			}
		})
	}
}

// FuzzDecodeCursor: DecodeCursor never panics, fails only with errs.Field("query.cursor"), and
// whatever it accepts re-encodes to a cursor that decodes to the same position.
func FuzzDecodeCursor(f *testing.F) {
	f.Add(registry.EncodeCursor(registry.Cursor{CreatedAt: time.Unix(1700000000, 123000).UTC(), ID: someAgentID}))
	f.Fuzz(func(t *testing.T, s string) {
		c, err := registry.DecodeCursor(s)
		if err != nil {
			if e := errs.As(err); e == nil || len(e.Fields) != 1 || e.Fields[0].Name != "query.cursor" {
				t.Fatalf("DecodeCursor(%q) = %v, want errs.Field(query.cursor)", s, err)
			}
			return
		}
		again, err := registry.DecodeCursor(registry.EncodeCursor(c))
		if err != nil {
			t.Fatalf("re-encoded cursor rejected: %v", err)
		}
		if diff := cmp.Diff(c, again); diff != "" {
			t.Fatalf("round trip (-first +second):\n%s", diff)
		}
	})
}
