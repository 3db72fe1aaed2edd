package httpapi

import (
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

func TestPreferences(t *testing.T) {
	for _, tc := range []struct {
		name   string
		values []string
		want   map[string]string
	}{
		{"one", []string{"respond-async"}, map[string]string{"respond-async": ""}},
		{"case-insensitive names", []string{"Respond-Async"}, map[string]string{"respond-async": ""}},
		{"list with values", []string{"respond-async, wait=100"}, map[string]string{"respond-async": "", "wait": "100"}},
		{"spaces around =", []string{"wait = 10 , handling=strict"}, map[string]string{"wait": "10", "handling": "strict"}},
		{"several fields", []string{"wait=10", "respond-async"}, map[string]string{"wait": "10", "respond-async": ""}},
		{"quoted value with comma and escapes", []string{`foo="a, \"b\"", respond-async`}, map[string]string{"foo": `a, "b"`, "respond-async": ""}},
		{"parameters dropped", []string{`return=minimal; foo="x;y"; bar, respond-async;a=1`}, map[string]string{"return": "minimal", "respond-async": ""}},
		{"empty parameters allowed", []string{"respond-async;;", "x; ;y=1"}, map[string]string{"respond-async": "", "x": ""}},
		{"empty elements", []string{",, respond-async ,"}, map[string]string{"respond-async": ""}},
		{"first occurrence wins", []string{"wait=1, WAIT=2"}, map[string]string{"wait": "1"}},
		{"malformed skipped; an open quote swallows the rest", []string{`=x, "q", a b, c=, d="open, respond-async`}, map[string]string{}},
		{"malformed one of many", []string{"a=, respond-async, b c"}, map[string]string{"respond-async": ""}},
		{"control character in quotes", []string{"a=\"x\x01\", b"}, map[string]string{"b": ""}},
		{"non-ASCII token", []string{"répondre, ok"}, map[string]string{"ok": ""}},
		{"nothing", nil, map[string]string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, preferences(tc.values)); diff != "" {
				t.Errorf("preferences(%q) (-want +got):\n%s", tc.values, diff)
			}
		})
	}
}

// TestPreferencesBounded: a header with many preferences is read only up to the bound.
func TestPreferencesBounded(t *testing.T) {
	var values []string
	for i := 0; i < 100; i++ {
		values = append(values, "x")
	}
	values = append(values, "respond-async")
	if _, ok := preferences(values)["respond-async"]; ok {
		t.Fatal("a preference past the bound was read")
	}
}

// FuzzPreferences: the parser of an untrusted header never panics, and what it returns are
// lower-case tokens with values that came from the input.
func FuzzPreferences(f *testing.F) {
	for _, s := range []string{"respond-async", `wait=10, respond-async; a="b\"c"`, `a="`, `,,;=`, "x;;y", "\"\\", "a=\"\xff\""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		for name, value := range preferences([]string{v}) {
			if name == "" || len(name) > len(v) || len(value) > len(v) {
				t.Fatalf("preferences(%q) gave %q=%q", v, name, value)
			}
			for i := 0; i < len(name); i++ {
				if !isTokenChar(name[i]) || (name[i] >= 'A' && name[i] <= 'Z') {
					t.Fatalf("preferences(%q) gave the name %q", v, name)
				}
			}
			if utf8.ValidString(v) && !utf8.ValidString(value) {
				t.Fatalf("preferences(%q) made the invalid value %q", v, value)
			}
		}
	})
}
