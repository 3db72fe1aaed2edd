// Package pagecursor holds the API's pagination rules: the opaque cursors of keyset pagination
// (a position (CreatedAt, ID) in a list ordered that way; domain packages such as tenant and
// registry wrap them with their own ID check), the page-size rule (Limit) and the read-one-more
// trim of a page (Trim). It imports only errs.
package pagecursor

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
)

// maxCursorLen bounds an encoded cursor; a real one is about 90 characters.
const maxCursorLen = 256

// Cursor is a position in a list ordered by (CreatedAt, ID): the next page starts strictly after
// it. Clients see it only encoded, as an opaque string.
type Cursor struct {
	CreatedAt time.Time
	ID        string
}

// cursorWire is the encoded form. Short keys keep the query string small.
type cursorWire struct {
	T string `json:"t"`
	I string `json:"i"`
}

// Encode returns c as an opaque URL-safe string.
func Encode(c Cursor) string {
	b, err := json.Marshal(cursorWire{T: c.CreatedAt.UTC().Format(time.RFC3339Nano), I: c.ID})
	if err != nil {
		// Marshalling two strings cannot fail.
		panic("encode cursor: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// Decode parses a cursor made by Encode whose ID validID accepts. Anything else — wrong alphabet,
// padding, extra or missing fields, an ID of another kind — is an errs.Field("query.cursor").
//
// The cursor is not signed, on purpose: it only names a position in an ordering the caller may
// list anyway, so a forged cursor can skip rows the caller could see but never reveal others.
func Decode(s string, validID func(string) bool) (Cursor, error) {
	bad := func(reason string) (Cursor, error) { return Cursor{}, errs.Field("query.cursor", reason) }
	if s == "" {
		return bad("must not be empty")
	}
	if len(s) > maxCursorLen {
		return bad("malformed cursor")
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil {
		return bad("malformed cursor")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var w cursorWire
	if err := dec.Decode(&w); err != nil {
		return bad("malformed cursor")
	}
	if _, err := dec.Token(); err != io.EOF {
		return bad("malformed cursor")
	}
	t, err := time.Parse(time.RFC3339Nano, w.T)
	// The year bound keeps every accepted time re-encodable: an offset can push a parsed time
	// into a UTC year RFC 3339 cannot write.
	if t = t.UTC(); err != nil || t.Year() < 1970 || t.Year() > 9999 || !validID(w.I) {
		return bad("malformed cursor")
	}
	return Cursor{CreatedAt: t, ID: w.I}, nil
}
