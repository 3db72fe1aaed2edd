package registry

import "github.com/nops-kernel/nops/internal/pagecursor"

// Cursor is a position in the agent list, which is ordered by (CreatedAt, ID).
type Cursor = pagecursor.Cursor

// EncodeCursor returns c as an opaque URL-safe string.
func EncodeCursor(c Cursor) string { return pagecursor.Encode(c) }

// DecodeCursor parses a cursor made by EncodeCursor for a agent ID; anything else is an
// errs.Field("query.cursor").
func DecodeCursor(s string) (Cursor, error) { return pagecursor.Decode(s, ValidID) }

// CursorOf returns the cursor positioned at x.
func CursorOf(x Agent) Cursor { return Cursor{CreatedAt: x.CreatedAt, ID: x.ID} }
