package idempotency_test

import (
	"strings"
	"testing"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/idempotency"
	"github.com/nops-kernel/nops/internal/principal"
)

func TestParseKey(t *testing.T) {
	long := strings.Repeat("a", idempotency.MaxKeyLength)
	tests := []struct {
		name   string
		values []string
		want   string // "" for an error
	}{
		{"draft example", []string{`"8e03978e-40d5-43e8-bc93-6894a57f9324"`}, "8e03978e-40d5-43e8-bc93-6894a57f9324"},
		{"bare uuid", []string{"8e03978e-40d5-43e8-bc93-6894a57f9324"}, "8e03978e-40d5-43e8-bc93-6894a57f9324"},
		{"bare token characters", []string{"A-z_0.9~:x"}, "A-z_0.9~:x"},
		{"surrounding spaces", []string{"  \"k\"\t"}, "k"},
		{"string with parameters", []string{`"k";a=1;b`}, "k"},
		{"string with spaces and escapes", []string{`"a \"b\" \\ c"`}, `a "b" \ c`},
		{"longest string", []string{`"` + long + `"`}, long},
		{"longest bare", []string{long}, long},
		{"empty value", []string{""}, ""},
		{"empty string", []string{`""`}, ""},
		{"sent twice", []string{`"a"`, `"a"`}, ""},
		{"list", []string{`"a", "b"`}, ""},
		{"unterminated", []string{`"abc`}, ""},
		{"bad escape", []string{`"a\b"`}, ""},
		{"non-ASCII in string", []string{"\"cl\u00e9\""}, ""},
		{"integer", []string{"42 x"}, ""},
		{"boolean", []string{"?1"}, ""},
		{"byte sequence", []string{":aGk=:"}, ""},
		{"bare with space", []string{"a b"}, ""},
		{"bare with slash", []string{"a/b"}, ""},
		{"string too long", []string{`"` + long + `a"`}, ""},
		{"bare too long", []string{long + "a"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := idempotency.ParseKey(tt.values)
			if tt.want == "" {
				e := errs.As(err)
				if e == nil || e.Code != errs.Invalid || len(e.Fields) != 1 || e.Fields[0].Name != "header.Idempotency-Key" {
					t.Fatalf("ParseKey(%q) = %q, %v; want an invalid error naming header.Idempotency-Key", tt.values, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseKey(%q) = %q, %v; want %q", tt.values, got, err, tt.want)
			}
		})
	}
}

func TestFingerprintRequest(t *testing.T) {
	base := idempotency.FingerprintRequest("POST", "/v1/agents", "tenant=a", []byte("{}"))
	if base != idempotency.FingerprintRequest("POST", "/v1/agents", "tenant=a", []byte("{}")) {
		t.Fatal("one request has two fingerprints")
	}
	others := map[string]idempotency.Fingerprint{
		"method":        idempotency.FingerprintRequest("PATCH", "/v1/agents", "tenant=a", []byte("{}")),
		"path":          idempotency.FingerprintRequest("POST", "/v1/agentsx", "tenant=a", []byte("{}")),
		"query":         idempotency.FingerprintRequest("POST", "/v1/agents", "tenant=b", []byte("{}")),
		"body":          idempotency.FingerprintRequest("POST", "/v1/agents", "tenant=a", []byte("{ }")),
		"shifted parts": idempotency.FingerprintRequest("POST", "/v1/agentst", "enant=a", []byte("{}")),
		"query in body": idempotency.FingerprintRequest("POST", "/v1/agents", "", []byte("tenant=a{}")),
	}
	for name, fp := range others {
		if fp == base {
			t.Errorf("a request differing in %s has the same fingerprint", name)
		}
	}
}

func TestScopeOf(t *testing.T) {
	tests := []struct {
		p    principal.Principal
		want idempotency.Scope
		ok   bool
	}{
		{principal.Principal{Subject: "usr_1", Tenant: "ten_1"}, idempotency.Scope{Tenant: "ten_1", Principal: "usr_1"}, true},
		{principal.Principal{Subject: "usr_admin"}, idempotency.Scope{Tenant: idempotency.GlobalTenant, Principal: "usr_admin"}, true},
		{principal.Principal{Tenant: "ten_1"}, idempotency.Scope{}, false},
	}
	for _, tt := range tests {
		got, ok := idempotency.ScopeOf(tt.p)
		if got != tt.want || ok != tt.ok {
			t.Errorf("ScopeOf(%+v) = %+v, %v; want %+v, %v", tt.p, got, ok, tt.want, tt.ok)
		}
	}
	if tok := idempotency.NewToken(); idempotency.ValidateToken(tok) != nil || tok == idempotency.NewToken() {
		t.Errorf("NewToken = %q: invalid or repeated", tok)
	}
}
