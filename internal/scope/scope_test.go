package scope_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/scope"
)

func TestParse(t *testing.T) {
	valid := []struct {
		in   string
		want scope.Scope
	}{
		{"registry:heartbeat:ten_x", scope.Scope{Service: "registry", Operation: "heartbeat", Tenant: "ten_x"}},
		{"invoke:*:ten_x", scope.Scope{Service: "invoke", Operation: "*", Tenant: "ten_x"}},
		{"*:*:*", scope.Scope{Service: "*", Operation: "*", Tenant: "*"}},
		{"invoke:text.summarize-v2_x:ten_01jz8y3w6v6r3b5q8x9k2m4n7q", scope.Scope{Service: "invoke", Operation: "text.summarize-v2_x", Tenant: "ten_01jz8y3w6v6r3b5q8x9k2m4n7q"}},
		{"a:b:" + strings.Repeat("c", scope.MaxSegmentLen), scope.Scope{Service: "a", Operation: "b", Tenant: strings.Repeat("c", scope.MaxSegmentLen)}},
	}
	for _, tc := range valid {
		t.Run(tc.in, func(t *testing.T) {
			got, err := scope.Parse(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Parse (-want +got):\n%s", diff)
			}
			if got.String() != tc.in {
				t.Errorf("String() = %q, want %q", got.String(), tc.in)
			}
		})
	}
	invalid := []string{
		"", "registry", "registry:heartbeat", "registry:heartbeat:ten_x:extra", "::", "registry::ten_x",
		"reg*:read:ten_x", "registry:read:ten_*", "registry:**:ten_x", "registry: read:ten_x", "registry:read:ten x",
		"registry:read:ten/x", "registry:read:ten_x\n", "régistry:read:ten_x", "a:b:" + strings.Repeat("c", scope.MaxSegmentLen+1),
		"registry:{tenant}:ten_x",
	}
	for _, in := range invalid {
		t.Run("invalid/"+in, func(t *testing.T) {
			if s, err := scope.Parse(in); err == nil {
				t.Errorf("Parse(%q) = %v, want an error", in, s)
			}
		})
	}
}

func TestMustParsePanicsOnInvalid(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("MustParse of an invalid scope did not panic")
		}
	}()
	scope.MustParse("nope")
}

func TestCovers(t *testing.T) {
	tests := []struct {
		granted, need string
		want          bool
	}{
		{"registry:heartbeat:ten_x", "registry:heartbeat:ten_x", true},
		{"registry:heartbeat:ten_x", "registry:heartbeat:ten_y", false}, // another tenant
		{"registry:heartbeat:ten_x", "registry:read:ten_x", false},
		{"registry:heartbeat:ten_x", "invoke:heartbeat:ten_x", false},
		{"invoke:*:ten_x", "invoke:text.summarize:ten_x", true},
		{"invoke:*:ten_x", "invoke:text.summarize:ten_y", false},
		{"invoke:*:ten_x", "registry:read:ten_x", false},
		{"*:read:ten_x", "registry:read:ten_x", true},
		{"*:read:ten_x", "registry:write:ten_x", false},
		{"registry:read:*", "registry:read:ten_x", true},
		{"*:*:*", "invoke:anything:ten_z", true},
		{"*:*:*", "*:*:*", true},
		// A needed wildcard (a tenant-less caller) is covered only by a wildcard.
		{"invoke:x:ten_x", "invoke:x:*", false},
		{"invoke:*:*", "invoke:x:*", true},
		{"invoke:*:ten_x", "invoke:*:ten_x", true},
		// Prefixes are not wildcards.
		{"registry:read:ten_x", "registry:read:ten_xy", false},
		{"registry:read:ten_xy", "registry:read:ten_x", false},
	}
	for _, tc := range tests {
		t.Run(tc.granted+"→"+tc.need, func(t *testing.T) {
			g, n := scope.MustParse(tc.granted), scope.MustParse(tc.need)
			if got := g.Covers(n); got != tc.want {
				t.Errorf("Covers = %v, want %v", got, tc.want)
			}
			if got := scope.Grants([]scope.Scope{scope.MustParse("other:thing:ten_q"), g}, n); got != tc.want {
				t.Errorf("Grants = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestCoversRefusesInvalidScopes(t *testing.T) {
	star := scope.MustParse("*:*:*")
	for _, bad := range []scope.Scope{{}, {Service: "a", Operation: "b"}, {Service: "a:b", Operation: "c", Tenant: "d"}, {Service: "a*", Operation: "*", Tenant: "*"}} {
		if star.Covers(bad) {
			t.Errorf("*:*:* covers invalid %+v", bad)
		}
		if bad.Covers(scope.MustParse("a:b:c")) {
			t.Errorf("invalid %+v covers a:b:c", bad)
		}
	}
	if scope.Grants(nil, scope.MustParse("a:b:c")) {
		t.Error("no grants grant something")
	}
}

func TestCheck(t *testing.T) {
	need := scope.MustParse("registry:heartbeat:ten_x")
	if err := scope.Check([]scope.Scope{scope.MustParse("registry:*:ten_x")}, need); err != nil {
		t.Fatalf("Check with a covering grant: %v", err)
	}
	err := scope.Check([]scope.Scope{scope.MustParse("registry:read:ten_x"), scope.MustParse("registry:heartbeat:ten_y")}, need)
	e := errs.As(err)
	if e == nil || e.Code != errs.Forbidden {
		t.Fatalf("Check without the scope = %v, want errs.Forbidden", err)
	}
	if !strings.Contains(e.Message, "registry:heartbeat:ten_x") {
		t.Errorf("message %q does not name the needed scope", e.Message)
	}
	if !errors.Is(err, scope.ErrMissingScope) {
		t.Errorf("%v is not ErrMissingScope", err)
	}
}

func TestParseAllAndStrings(t *testing.T) {
	in := []string{"registry:read:ten_x", "invoke:*:ten_x"}
	got, err := scope.ParseAll(in)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(in, scope.Strings(got)); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	if _, err := scope.ParseAll([]string{"registry:read:ten_x", "bad"}); err == nil {
		t.Error("ParseAll with an invalid scope succeeded")
	}
}
