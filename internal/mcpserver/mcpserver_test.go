package mcpserver

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/nops-kernel/nops/internal/errs"
)

func TestPeekTellsWhichToolsARequestNeeds(t *testing.T) {
	for body, want := range map[string]toolScope{
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}`:                      {},
		`{"jsonrpc":"2.0","method":"notifications/initialized"}`:                          {},
		`{"jsonrpc":"2.0","id":2,"method":"tools/list"}`:                                  {all: true},
		`{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"text.echo"}}`:    {only: "text.echo"},
		`{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"arguments":{}}}`:        {all: true},
		`[{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"a"}},{"id":4}]`: {all: true},
		`not json`: {all: true},
	} {
		r := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(body))
		got, err := peek(r)
		if err != nil || got != want {
			t.Errorf("peek(%s) = %+v, %v; want %+v", body, got, err, want)
		}
		// The body is put back for the SDK to read.
		if b, _ := io.ReadAll(r.Body); string(b) != body {
			t.Errorf("body after peek %q, want %q", b, body)
		}
	}
}

func TestMCPSchemaServesObjectSchemasOnly(t *testing.T) {
	for in, want := range map[string]string{
		``:                                   `{"type":"object"}`,
		`{"type":"object","required":["a"]}`: `{"type":"object","required":["a"]}`,
		`{"type":"string"}`:                  ``,
		`{"type":["object","null"]}`:         ``,
		`true`:                               ``,
	} {
		if got := string(mcpSchema(json.RawMessage(in))); got != want {
			t.Errorf("mcpSchema(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestErrTextNeverShowsInternals(t *testing.T) {
	if got := errText(io.ErrUnexpectedEOF); got != "internal error" {
		t.Errorf("errText of a plain error = %q", got)
	}
	e := errs.Field("body.text", "must be a string")
	e.Message = "input does not match the input schema"
	if got := errText(e); got != "invalid: input does not match the input schema; body.text must be a string" {
		t.Errorf("errText = %q", got)
	}
}

// FuzzPeek: whatever a client sends, peek neither fails nor loses the body.
func FuzzPeek(f *testing.F) {
	f.Add(`{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"text.echo"}}`)
	f.Add(`[]`)
	f.Add(`{"method":1}`)
	f.Fuzz(func(t *testing.T, body string) {
		r := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(body))
		if _, err := peek(r); err != nil {
			t.Fatalf("peek: %v", err)
		}
		if b, _ := io.ReadAll(r.Body); string(b) != body {
			t.Fatalf("body lost")
		}
	})
}
