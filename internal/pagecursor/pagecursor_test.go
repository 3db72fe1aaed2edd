package pagecursor_test

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/pagecursor"
)

const someTenantID = "ten_01jz8y3w6v6r3b5q8x9k2m4n7q"

// validID stands in for a domain's ID check: "ten_" and 26 lower-case base32 characters.
func validID(id string) bool {
	rest, ok := strings.CutPrefix(id, "ten_")
	return ok && len(rest) == 26 && strings.Trim(rest, "0123456789abcdefghjkmnpqrstvwxyz") == ""
}

func decode(s string) (pagecursor.Cursor, error) { return pagecursor.Decode(s, validID) }

func TestCursorRoundTrip(t *testing.T) {
	tests := []pagecursor.Cursor{
		{CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 123456000, time.UTC), ID: someTenantID},
		{CreatedAt: time.Date(1970, 1, 1, 0, 0, 0, 1000, time.UTC), ID: someTenantID},
		// A non-UTC time comes back as the same instant in UTC.
		{CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600)), ID: someTenantID},
	}
	for _, c := range tests {
		s := pagecursor.Encode(c)
		if strings.ContainsAny(s, "+/=") {
			t.Errorf("EncodeCursor = %q, not URL-safe unpadded", s)
		}
		got, err := decode(s)
		if err != nil {
			t.Fatalf("DecodeCursor(%q): %v", s, err)
		}
		if diff := cmp.Diff(c, got); diff != "" {
			t.Errorf("round trip (-want +got):\n%s", diff)
		}
		if got.CreatedAt.Location() != time.UTC {
			t.Errorf("decoded time in %v, want UTC", got.CreatedAt.Location())
		}
	}
}

func TestDecodeCursorRejects(t *testing.T) {
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	good := pagecursor.Encode(pagecursor.Cursor{CreatedAt: time.Unix(1, 0), ID: someTenantID})
	tests := map[string]string{
		"empty":          "",
		"not base64":     "!!!!",
		"padded":         base64.URLEncoding.EncodeToString([]byte(`{"t":"2026-01-01T00:00:00Z","i":"` + someTenantID + `"}`)),
		"std alphabet":   strings.NewReplacer("-", "+", "_", "/").Replace(good) + "+/",
		"not json":       enc("hello"),
		"json array":     enc(`["2026-01-01T00:00:00Z","` + someTenantID + `"]`),
		"null":           enc("null"),
		"trailing data":  enc(`{"t":"2026-01-01T00:00:00Z","i":"` + someTenantID + `"}{}`),
		"unknown field":  enc(`{"t":"2026-01-01T00:00:00Z","i":"` + someTenantID + `","x":1}`),
		"missing time":   enc(`{"i":"` + someTenantID + `"}`),
		"bad time":       enc(`{"t":"yesterday","i":"` + someTenantID + `"}`),
		"zero time":      enc(`{"t":"0001-01-01T00:00:00Z","i":"` + someTenantID + `"}`),
		"missing id":     enc(`{"t":"2026-01-01T00:00:00Z"}`),
		"agent id":       enc(`{"t":"2026-01-01T00:00:00Z","i":"agt_01jz8y3w6v6r3b5q8x9k2m4n7q"}`),
		"sql in id":      enc(`{"t":"2026-01-01T00:00:00Z","i":"ten_' OR 1=1 --"}`),
		"too long":       strings.Repeat("A", 300),
		"truncated":      good[:len(good)-3],
		"number as time": enc(`{"t":1,"i":"` + someTenantID + `"}`),
	}
	for name, s := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := decode(s)
			e := errs.As(err)
			if e == nil || e.Code != errs.Invalid || len(e.Fields) != 1 || e.Fields[0].Name != "query.cursor" {
				t.Fatalf("DecodeCursor(%q) = %v, want errs.Field(query.cursor)", s, err)
			}
		})
	}
}

// FuzzDecodeCursor: DecodeCursor never panics, fails only with errs.Field("query.cursor"), and
// whatever it accepts re-encodes to a cursor that decodes to the same position.
func FuzzDecodeCursor(f *testing.F) {
	f.Add(pagecursor.Encode(pagecursor.Cursor{CreatedAt: time.Unix(1700000000, 5000).UTC(), ID: someTenantID}))
	f.Fuzz(func(t *testing.T, s string) {
		c, err := decode(s)
		if err != nil {
			if e := errs.As(err); e == nil || len(e.Fields) != 1 || e.Fields[0].Name != "query.cursor" {
				t.Fatalf("DecodeCursor(%q) = %v, want errs.Field(query.cursor)", s, err)
			}
			return
		}
		again, err := decode(pagecursor.Encode(c))
		if err != nil {
			t.Fatalf("re-encoded cursor rejected: %v", err)
		}
		if diff := cmp.Diff(c, again); diff != "" {
			t.Fatalf("round trip (-first +second):\n%s", diff)
		}
	})
}
