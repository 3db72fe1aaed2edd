package toolpin

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"testing"
)

func mustHash(t *testing.T, d Definition) string {
	t.Helper()
	h, err := Hash(d)
	if err != nil {
		t.Fatalf("Hash(%+v): %v", d, err)
	}
	return h
}

func TestHashIsOverTheCanonicalForm(t *testing.T) {
	// The documented canonical form, hashed by hand.
	canonical := `{"description":"Echo it.","input_schema":{"properties":{"text":{"maxLength":10,"type":"string"}},"type":"object"},"name":"text.echo"}`
	sum := sha256.Sum256([]byte(canonical))
	want := hex.EncodeToString(sum[:])
	got := mustHash(t, Definition{Name: "text.echo", Description: "Echo it.", InputSchema: json.RawMessage(`{ "type": "object",
		"properties": {"text": {"type": "string", "maxLength": 10}} }`)})
	if got != want {
		t.Fatalf("Hash = %s, want %s (sha256 of %s)", got, want, canonical)
	}
	if !ValidHash(got) {
		t.Fatalf("ValidHash(%s) = false", got)
	}
	// No schema is null; an empty document is no schema.
	none := `{"description":"","input_schema":null,"name":"a"}`
	sum = sha256.Sum256([]byte(none))
	if got := mustHash(t, Definition{Name: "a", InputSchema: json.RawMessage("  ")}); got != hex.EncodeToString(sum[:]) {
		t.Fatalf("Hash without schema = %s", got)
	}
}

func TestHashChangesWithEveryPart(t *testing.T) {
	base := Definition{Name: "text.echo", Description: "Echo it.", InputSchema: json.RawMessage(`{"type":"object","properties":{"n":{"type":"number","maximum":1.50}}}`)}
	h := mustHash(t, base)
	for name, d := range map[string]Definition{
		"name":        {Name: "text.echo2", Description: base.Description, InputSchema: base.InputSchema},
		"description": {Name: base.Name, Description: "Echo it!", InputSchema: base.InputSchema},
		"schema":      {Name: base.Name, Description: base.Description, InputSchema: json.RawMessage(`{"type":"object","properties":{"n":{"type":"number","maximum":1.5}}}`)},
		"no schema":   {Name: base.Name, Description: base.Description},
	} {
		if mustHash(t, d) == h {
			t.Errorf("changing the %s keeps the hash", name)
		}
	}
	// Key order and whitespace do not count.
	same := Definition{Name: base.Name, Description: base.Description, InputSchema: json.RawMessage(`{"properties":{"n":{"maximum":1.50,"type":"number"}},  "type":"object"}`)}
	if mustHash(t, same) != h {
		t.Error("key order or whitespace changed the hash")
	}
}

func TestHashRefusesMalformedSchemas(t *testing.T) {
	for _, s := range []string{`{"type":`, `{"a":1} {"b":2}`, `nope`} {
		if _, err := Hash(Definition{Name: "a", InputSchema: json.RawMessage(s)}); err == nil {
			t.Errorf("Hash accepted schema %q", s)
		}
	}
}

func TestValidHash(t *testing.T) {
	for s, want := range map[string]bool{
		"": false, "ab": false,
		"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef": true,
		"0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef": false,
		"0123456789abcdeg0123456789abcdef0123456789abcdef0123456789abcdef": false,
	} {
		if got := ValidHash(s); got != want {
			t.Errorf("ValidHash(%q) = %v, want %v", s, got, want)
		}
	}
}

// FuzzHash: any schema document either is refused or hashes deterministically to a valid hash,
// the same as its re-encoded form (the canonical form is a fixed point).
func FuzzHash(f *testing.F) {
	f.Add("text.echo", "Echo it.", `{"type":"object","properties":{"text":{"type":"string"}}}`)
	f.Add("a", "", ``)
	f.Add("a", "\u2028", `[1, 2.50, 1e3, "\u00e9", null, true]`)
	f.Fuzz(func(t *testing.T, name, desc, schema string) {
		d := Definition{Name: name, Description: desc, InputSchema: json.RawMessage(schema)}
		h1, err := Hash(d)
		if err != nil {
			return
		}
		h2, err := Hash(d)
		if err != nil || h1 != h2 || !ValidHash(h1) {
			t.Fatalf("Hash not deterministic or invalid: %s %s %v", h1, h2, err)
		}
	})
}
