package registry_test

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/registry"
)

func TestETag(t *testing.T) {
	a := registry.Agent{ID: someAgentID, Revision: 1}
	tag := a.ETag()
	// A strong entity-tag (RFC 9110 §8.8.3): DQUOTE *etagc DQUOTE, no W/ prefix.
	if !regexp.MustCompile(`^"[\x21\x23-\x7e]+"$`).MatchString(tag) {
		t.Fatalf("ETag() = %q, not a strong entity tag", tag)
	}
	if tag != a.ETag() {
		t.Error("ETag not deterministic")
	}
	if strings.Contains(tag, someAgentID) {
		t.Errorf("ETag %q exposes its inputs; it should be opaque", tag)
	}
	b := a
	b.Revision = 2
	c := a
	c.ID = "agt_01jz8y3w6v6r3b5q8x9k2m4n7r"
	if a.ETag() == b.ETag() || a.ETag() == c.ETag() {
		t.Error("ETag does not change with Revision and ID")
	}
	// Fields other than ID and Revision (heartbeats, status) leave it alone.
	d := a
	d.Status, d.HeartbeatAt, d.Name = registry.StatusZombie, t0, "other"
	if d.ETag() != a.ETag() {
		t.Error("ETag depends on fields other than ID and Revision")
	}
}

func TestCheckIfMatch(t *testing.T) {
	a := registry.Agent{ID: someAgentID, Revision: 3}
	tag := a.ETag()
	stale := registry.Agent{ID: someAgentID, Revision: 2}.ETag()
	type outcome int
	const (
		pass outcome = iota
		required
		malformed
		failed
	)
	tests := []struct {
		header string
		want   outcome
	}{
		{tag, pass},
		{" " + tag + "\t", pass},
		{"*", pass},
		{" * ", pass},
		{stale + ", " + tag, pass},
		{stale + "," + tag + ",", pass},
		{", ," + tag, pass},
		{"", required},
		{"  ", required},
		{stale, failed},
		{"W/" + tag, failed}, // weak tags never match If-Match
		{`"other"`, failed},
		{`""`, failed},
		{strings.Trim(tag, `"`), malformed},
		{tag + " x", malformed},
		{`"a" "b"`, malformed},
		{`"unterminated`, malformed},
		{`W/`, malformed},
		{`w/"a"`, malformed},
		{"*, " + tag, malformed},
		{",,", malformed},
		{"\"a\x01\"", malformed},
		{"\"a b\"", malformed},
		{strings.Repeat(tag+",", 500), malformed}, // too long
	}
	for _, tt := range tests {
		err := registry.CheckIfMatch(tt.header, a)
		var got outcome
		switch e := errs.As(err); {
		case err == nil:
			got = pass
		case errors.Is(err, registry.ErrPreconditionRequired):
			got = required
			if e.Code != errs.Invalid || e.Fields[0].Name != "header.If-Match" {
				t.Errorf("required error %v does not name header.If-Match", err)
			}
		case errors.Is(err, registry.ErrPreconditionFailed):
			got = failed
			if e.Code != errs.PreconditionFailed {
				t.Errorf("precondition failure %v is not an errs.PreconditionFailed", err)
			}
		case e != nil && e.Code == errs.Invalid && e.Fields[0].Name == "header.If-Match":
			got = malformed
		default:
			t.Errorf("CheckIfMatch(%.40q) = unexpected %v", tt.header, err)
			continue
		}
		if got != tt.want {
			t.Errorf("CheckIfMatch(%.40q) = %v (outcome %d), want outcome %d", tt.header, err, got, tt.want)
		}
	}
}

// FuzzCheckIfMatch: CheckIfMatch never panics and answers only with the four documented
// outcomes.
func FuzzCheckIfMatch(f *testing.F) {
	a := registry.Agent{ID: someAgentID, Revision: 1}
	for _, s := range []string{a.ETag(), "*", `W/"x", "y"`, `"a",,"b"`, ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		err := registry.CheckIfMatch(h, a)
		if err == nil || errors.Is(err, registry.ErrPreconditionFailed) || errors.Is(err, registry.ErrPreconditionRequired) {
			return
		}
		if e := errs.As(err); e == nil || e.Code != errs.Invalid || e.Fields[0].Name != "header.If-Match" {
			t.Fatalf("CheckIfMatch(%q) = %v", h, err)
		}
	})
}
