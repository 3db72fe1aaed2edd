package idempotency_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/dunglas/httpsfv"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/idempotency"
)

var bare = regexp.MustCompile(`^[A-Za-z0-9._~:-]{1,255}$`)

// FuzzParseKey checks ParseKey on any header value: it never panics; a key it accepts is valid,
// is the value itself when unquoted, and survives serialising as a Structured Field String and
// parsing back; a value it refuses gets an invalid error naming the field, which never quotes the
// value. Seeds: testdata/fuzz/FuzzParseKey.
func FuzzParseKey(f *testing.F) {
	// Every message ParseKey can give: a value that happens to be part of one is not quoted.
	var messages strings.Builder
	for _, v := range []string{"", "a b", `"a`, "?1", `""`, "\"\x01\""} {
		_, err := idempotency.ParseKey([]string{v})
		messages.WriteString(err.Error() + "\n")
	}
	_, err := idempotency.ParseKey([]string{"a", "b"})
	messages.WriteString(err.Error())
	f.Fuzz(func(t *testing.T, v string) {
		key, err := idempotency.ParseKey([]string{v})
		if err != nil {
			e := errs.As(err)
			if e == nil || e.Code != errs.Invalid || len(e.Fields) != 1 || e.Fields[0].Name != "header.Idempotency-Key" {
				t.Fatalf("ParseKey(%q) error %v: want an invalid error naming header.Idempotency-Key", v, err)
			}
			if len(v) >= 4 && strings.Contains(e.Error(), v) && !strings.Contains(messages.String(), v) {
				t.Fatalf("ParseKey(%q) error %q quotes the value", v, e.Error())
			}
			return
		}
		if err := idempotency.ValidateKey(key); err != nil {
			t.Fatalf("ParseKey(%q) = %q, which is not a valid key: %v", v, key, err)
		}
		trimmed := strings.Trim(v, " \t")
		if !strings.HasPrefix(trimmed, `"`) {
			if key != trimmed || !bare.MatchString(key) {
				t.Fatalf("ParseKey(%q) = %q, want the bare token %q", v, key, trimmed)
			}
		}
		quoted, err := httpsfv.Marshal(httpsfv.NewItem(key))
		if err != nil {
			t.Fatalf("serialise %q: %v", key, err)
		}
		again, err := idempotency.ParseKey([]string{quoted})
		if err != nil || again != key {
			t.Fatalf("ParseKey(%q) = %q, %v; want %q back", quoted, again, err, key)
		}
	})
}
