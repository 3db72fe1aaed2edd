package registry_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/registry"
)

func TestCompileSchemaAccepts(t *testing.T) {
	tests := map[string]string{
		"empty object":    `{}`,
		"true":            `true`,
		"false":           `false`,
		"object":          `{"type":"object","properties":{"q":{"type":"string","maxLength":10}},"required":["q"],"additionalProperties":false}`,
		"internal ref":    `{"$defs":{"s":{"type":"string"}},"properties":{"a":{"$ref":"#/$defs/s"}}}`,
		"anchor ref":      `{"$defs":{"s":{"$anchor":"str","type":"string"}},"items":{"$ref":"#str"}}`,
		"own $id ref":     `{"$id":"https://example.com/s.json","$defs":{"s":{"type":"string"}},"items":{"$ref":"https://example.com/s.json#/$defs/s"}}`,
		"draft-07 schema": `{"$schema":"http://json-schema.org/draft-07/schema#","definitions":{"s":{"type":"string"}},"items":{"$ref":"#/definitions/s"}}`,
		"2020-12 meta":    `{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"integer"}`,
		"unknown format":  `{"type":"string","format":"no-such-format"}`,
		"white space":     " {\n  \"type\" : \"string\"\n} ",
	}
	for name, raw := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := registry.CompileSchema(json.RawMessage(raw)); err != nil {
				t.Fatalf("CompileSchema(%s): %v", raw, err)
			}
		})
	}
}

func TestCompileSchemaDefaultsToDraft2020(t *testing.T) {
	// prefixItems exists only from draft 2020-12; under an older draft it would be ignored and
	// [1] would pass.
	sch, err := registry.CompileSchema(json.RawMessage(`{"prefixItems":[{"type":"string"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := sch.Validate([]any{1.0}); err == nil {
		t.Error("prefixItems not applied: the default draft is not 2020-12")
	}
	if err := sch.Validate([]any{"ok"}); err != nil {
		t.Errorf("valid instance rejected: %v", err)
	}
}

func TestCompileSchemaRejects(t *testing.T) {
	tests := map[string]struct {
		raw    string
		reason string // a substring of the error
	}{
		"not json":         {`{"type":`, "must be valid JSON"},
		"trailing data":    {`{} {}`, "must be valid JSON"},
		"empty":            {``, "must be valid JSON"},
		"number":           {`5`, "an object or a boolean"},
		"array":            {`[]`, "an object or a boolean"},
		"string":           {`"x"`, "an object or a boolean"},
		"bad type":         {`{"type":5}`, "not a valid JSON Schema"},
		"bad keyword type": {`{"properties":{"a":{"minLength":-1}}}`, "/properties/a/minLength"},
		"bad regex":        {`{"pattern":"("}`, "not a valid JSON Schema"},
		"missing pointer":  {`{"$ref":"#/$defs/nope"}`, "not a valid JSON Schema"},
		"unknown $schema":  {`{"$schema":"https://example.com/my-meta"}`, "must not reference"},
		"relative ref":     {`{"$ref":"other.json"}`, `must not reference "other.json"`},
		"ref via $id":      {`{"$id":"https://example.com/a.json","$ref":"b.json"}`, `must not reference "https://example.com/b.json"`},
		"too big":          {`{"description":"` + strings.Repeat("x", registry.MaxSchemaBytes) + `"}`, "at most"},
		"too deep":         {strings.Repeat(`{"not":`, registry.MaxSchemaDepth) + `{}` + strings.Repeat(`}`, registry.MaxSchemaDepth), "nest"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := registry.CompileSchema(json.RawMessage(tt.raw))
			if err == nil || !strings.Contains(err.Error(), tt.reason) {
				t.Fatalf("CompileSchema(%.60s) = %v, want an error containing %q", tt.raw, err, tt.reason)
			}
			if strings.Contains(err.Error(), "schemas.nops.invalid") {
				t.Errorf("error leaks the internal base URL: %v", err)
			}
		})
	}
	// Just inside the depth bound compiles.
	ok := strings.Repeat(`{"not":`, registry.MaxSchemaDepth-1) + `{}` + strings.Repeat(`}`, registry.MaxSchemaDepth-1)
	if _, err := registry.CompileSchema(json.RawMessage(ok)); err != nil {
		t.Errorf("schema nesting %d levels rejected: %v", registry.MaxSchemaDepth, err)
	}
}

// TestRemoteRefsNeverFetched points $ref and $schema at a live local HTTP server and at a real
// file: compilation must fail naming the field, and neither may be read.
func TestRemoteRefsNeverFetched(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "application/schema+json")
		_, _ = w.Write([]byte(`{"type":"string"}`))
	}))
	defer srv.Close()
	file := filepath.Join(t.TempDir(), "s.json")
	if err := os.WriteFile(file, []byte(`{"type":"string"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	// Both targets hold a valid schema: had either been read, compilation would have succeeded.
	refs := map[string]string{
		"http ref":       `{"$ref":"` + srv.URL + `/s.json"}`,
		"http $schema":   `{"$schema":"` + srv.URL + `/meta.json"}`,
		"nested http":    `{"properties":{"a":{"$ref":"` + srv.URL + `/a.json#/x"}}}`,
		"$id then rel":   `{"$id":"` + srv.URL + `/root.json","$ref":"s.json"}`,
		"dynamic ref":    `{"$dynamicRef":"` + srv.URL + `/d.json#meta"}`,
		"file ref":       `{"$ref":"file://` + filepath.ToSlash(file) + `"}`,
		"file in nested": `{"items":{"$ref":"file://` + filepath.ToSlash(file) + `"}}`,
	}
	for name, raw := range refs {
		t.Run(name, func(t *testing.T) {
			in := validInput()
			in.Capabilities[1].InputSchema = json.RawMessage(raw)
			_, err := in.Normalize()
			e := errs.As(err)
			if e == nil || len(e.Fields) != 1 || e.Fields[0].Name != "body.capabilities[1].input_schema" {
				t.Fatalf("Normalize = %v, want one field error on body.capabilities[1].input_schema", err)
			}
			if !strings.Contains(e.Fields[0].Reason, "must not reference") {
				t.Errorf("reason = %q, want a refusal of the reference", e.Fields[0].Reason)
			}
		})
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the schema server was fetched %d times", n)
	}
}
