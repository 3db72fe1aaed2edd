package etag_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/etag"
)

func TestNew(t *testing.T) {
	tag := etag.New("agt_1", "3")
	if !regexp.MustCompile(`^"[A-Za-z0-9_-]{22}"$`).MatchString(tag) {
		t.Fatalf("New = %q, not a quoted 128-bit base64url strong tag", tag)
	}
	if tag != etag.New("agt_1", "3") {
		t.Error("New is not deterministic")
	}
	for _, other := range [][]string{{"agt_1", "4"}, {"agt_2", "3"}, {"agt_13"}, {"agt_1", "3", ""}} {
		if etag.New(other...) == tag {
			t.Errorf("New(%q) = New(agt_1, 3)", other)
		}
	}
	if strings.Contains(tag, "agt_1") {
		t.Error("the tag exposes its parts")
	}
}

func TestMatch(t *testing.T) {
	cur := etag.New("x", "2")
	stale := etag.New("x", "1")
	tests := []struct {
		h, current string
		want       bool
		bad        bool
	}{
		{cur, cur, true, false},
		{" " + cur + "\t", cur, true, false},
		{stale + ", " + cur, cur, true, false},
		{", ," + cur + ",", cur, true, false},
		{"*", cur, true, false},
		{"*", "", false, false}, // * needs a current representation
		{cur, "", false, false},
		{"", cur, false, false},
		{stale, cur, false, false},
		{"W/" + cur, cur, false, false}, // weak never matches
		{`""`, cur, false, false},
		{strings.Trim(cur, `"`), cur, false, true},
		{cur + " x", cur, false, true},
		{`"a" "b"`, cur, false, true},
		{`"unterminated`, cur, false, true},
		{`w/"a"`, cur, false, true},
		{"*, " + cur, cur, false, true},
		{",,", cur, false, true},
		{"\"a\x01\"", cur, false, true},
		{strings.Repeat(cur+",", 200), cur, false, true}, // too long
	}
	for _, tt := range tests {
		got, err := etag.Match("header.If-Match", tt.h, tt.current)
		if tt.bad {
			var e *errs.Error
			if err == nil || !errs.Is(err, errs.Invalid) || !asField(err, &e) {
				t.Errorf("Match(%q) error = %v, want an invalid header.If-Match", tt.h, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Match(%q, %q) = %v, %v; want %v", tt.h, tt.current, got, err, tt.want)
		}
	}
}

func asField(err error, e **errs.Error) bool {
	x, ok := err.(*errs.Error)
	if !ok || len(x.Fields) != 1 || x.Fields[0].Name != "header.If-Match" {
		return false
	}
	*e = x
	return true
}

func TestEmpty(t *testing.T) {
	for h, want := range map[string]bool{"": true, " \t": true, "*": false, `"a"`: false} {
		if etag.Empty(h) != want {
			t.Errorf("Empty(%q) != %v", h, want)
		}
	}
}

func FuzzMatch(f *testing.F) {
	cur := etag.New("x", "1")
	for _, s := range []string{cur, "*", "W/" + cur, `"a", "b"`, `"a`, ",,", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		ok, err := etag.Match("header.If-None-Match", h, cur)
		if err != nil && ok {
			t.Fatal("matched and failed at once")
		}
		if ok && !strings.Contains(h, cur) && strings.Trim(h, " \t") != "*" {
			t.Fatalf("%q matched without holding the tag", h)
		}
		if none, _ := etag.Match("header.If-None-Match", h, ""); none {
			t.Fatalf("%q matched a resource that does not exist", h)
		}
	})
}
