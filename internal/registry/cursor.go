package registry

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

// Cursor is a position in an agent list, which is ordered by (CreatedAt, ID): the next page
// starts strictly after it. Clients see it only encoded, as an opaque string.
type Cursor struct {
	CreatedAt time.Time
	ID        string
}

// cursorWire is the encoded form. Short keys keep the query string small.
type cursorWire struct {
	T string `json:"t"`
	I string `json:"i"`
}

// EncodeCursor returns c as an opaque URL-safe string.
func EncodeCursor(c Cursor) string {
	b, err := json.Marshal(cursorWire{T: c.CreatedAt.UTC().Format(time.RFC3339Nano), I: c.ID})
	if err != nil {
		// Marshalling two strings cannot fail.
		panic("encode agent cursor: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// DecodeCursor parses a cursor made by EncodeCursor. Anything else — wrong alphabet, padding,
// extra or missing fields, an ID that is not an agent ID — is an errs.Field("query.cursor").
//
// The cursor is not signed, on purpose: it only names a position in the caller's own
// tenant-scoped ordering, so a forged cursor can skip agents the caller could list anyway but
// never reveal another tenant's.
func DecodeCursor(s string) (Cursor, error) {
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
	if t = t.UTC(); err != nil || t.Year() < 1970 || t.Year() > 9999 || !ValidID(w.I) {
		return bad("malformed cursor")
	}
	return Cursor{CreatedAt: t, ID: w.I}, nil
}

// CursorOf returns the cursor positioned at a.
func CursorOf(a Agent) Cursor { return Cursor{CreatedAt: a.CreatedAt, ID: a.ID} }
