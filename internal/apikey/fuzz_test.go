package apikey

import (
	"regexp"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
)

// causeRE is every cause Parse may give: none quotes the input.
var causeRE = regexp.MustCompile(`^malformed api key: (\d+ bytes, want 77|missing prefix|bad key id|missing separator|bad secret alphabet)$`)

// FuzzParse feeds arbitrary strings to Parse, which reads untrusted headers and bodies: it must
// never panic; what it accepts must be exactly format(id, secret) with a valid ID and secret; what
// it refuses gets the uniform error, whose cause never quotes the input. Seeds are in
// testdata/fuzz/FuzzParse; a freshly generated key is added here.
func FuzzParse(f *testing.F) {
	id, err := newID(time.Now())
	if err != nil {
		f.Fatal(err)
	}
	secret, err := newSecret()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(format(id, secret))
	f.Fuzz(func(t *testing.T, raw string) {
		id, secret, err := Parse(raw)
		if err != nil {
			requireRejected(t, err)
			if cause := errs.As(err).Err; cause == nil || !causeRE.MatchString(cause.Error()) {
				t.Fatalf("cause %v is not one of the fixed causes", cause)
			}
			return
		}
		if format(id, secret) != raw || !ValidID(id) || len(secret) != SecretLen {
			t.Fatalf("Parse(%q) accepted %q, %q", raw, id, secret)
		}
		for i := 0; i < len(secret); i++ {
			if !isBase62(secret[i]) {
				t.Fatalf("Parse(%q) accepted secret byte %q", raw, secret[i])
			}
		}
	})
}
