package idempotency

import (
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"regexp"
	"strings"

	"github.com/dunglas/httpsfv"

	"github.com/nops-kernel/nops/internal/errs"
)

// bareKey is the unquoted form accepted besides the draft's Structured Field String.
var bareKey = regexp.MustCompile(`^[A-Za-z0-9._~:-]{1,255}$`)

// keyField names the header in problems.
const keyField = "header." + HeaderKey

// ParseKey returns the key carried by the values of the Idempotency-Key header fields of one
// request (http.Header.Values). The draft's form is a Structured Field String, parsed as RFC 9651
// says (parameters, which the draft defines none of, are ignored); a bare token of
// [A-Za-z0-9._~:-]{1,255} is accepted as well and names the same key as its quoted form. The
// unquoted string must be 1 to MaxKeyLength characters. Errors are errs.Invalid naming the field
// header.Idempotency-Key; they never quote the value.
func ParseKey(values []string) (string, error) {
	if len(values) != 1 {
		return "", errs.Field(keyField, "must be sent once")
	}
	// RFC 9651 parsers drop leading and trailing spaces; HTTP also trims tabs (OWS).
	v := strings.Trim(values[0], " \t")
	if !strings.HasPrefix(v, `"`) {
		if bareKey.MatchString(v) {
			return v, nil
		}
		return "", errs.Field(keyField, `must be a structured field string ("…") or a token of A-Z a-z 0-9 . _ ~ : -, of 1 to 255 characters`)
	}
	item, err := httpsfv.UnmarshalItem([]string{v})
	if err != nil {
		return "", errs.Field(keyField, "malformed structured field string")
	}
	key, ok := item.Value.(string)
	if !ok {
		return "", errs.Field(keyField, "must be a structured field string")
	}
	if err := ValidateKey(key); err != nil {
		return "", err
	}
	return key, nil
}

// Fingerprint identifies the request a key was first used with.
type Fingerprint [sha256.Size]byte

// FingerprintRequest returns the SHA-256 over the method, the (escaped) path, the raw query and
// the body. Each part is prefixed with its length, so no two different requests share the bytes
// hashed.
func FingerprintRequest(method, path, rawQuery string, body []byte) Fingerprint {
	h := sha256.New()
	h.Write([]byte("nops-idempotency-fingerprint-v1"))
	writePart(h, []byte(method))
	writePart(h, []byte(path))
	writePart(h, []byte(rawQuery))
	writePart(h, body)
	var fp Fingerprint
	h.Sum(fp[:0])
	return fp
}

func writePart(h hash.Hash, b []byte) {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(b)))
	h.Write(n[:])
	h.Write(b)
}
