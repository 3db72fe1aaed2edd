package registry_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/registry"
)

func TestParseSelector(t *testing.T) {
	req := func(k string, op registry.Operator, v string) registry.Requirement {
		return registry.Requirement{Key: k, Op: op, Value: v}
	}
	tests := []struct {
		in   string
		want registry.LabelSelector
		str  string // canonical String(); "" means same as in
	}{
		{"", nil, ""},
		{"  \t ", nil, ""},
		{"env=prod,tier!=cache,gpu,!legacy", registry.LabelSelector{
			req("env", registry.OpEquals, "prod"),
			req("tier", registry.OpNotEquals, "cache"),
			req("gpu", registry.OpExists, ""),
			req("legacy", registry.OpNotExists, ""),
		}, ""},
		{"env==prod", registry.LabelSelector{req("env", registry.OpEquals, "prod")}, "env=prod"},
		{" env = prod , ! legacy ,\tgpu ", registry.LabelSelector{
			req("env", registry.OpEquals, "prod"), req("legacy", registry.OpNotExists, ""), req("gpu", registry.OpExists, ""),
		}, "env=prod,!legacy,gpu"},
		{"tier=", registry.LabelSelector{req("tier", registry.OpEquals, "")}, ""},
		{"tier!=", registry.LabelSelector{req("tier", registry.OpNotEquals, "")}, ""},
		{"example.com/team=a-b_c.d", registry.LabelSelector{req("example.com/team", registry.OpEquals, "a-b_c.d")}, ""},
		{"env=a,env=b", registry.LabelSelector{req("env", registry.OpEquals, "a"), req("env", registry.OpEquals, "b")}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := registry.ParseSelector(tt.in)
			if err != nil {
				t.Fatalf("ParseSelector(%q): %v", tt.in, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseSelector(%q) (-want +got):\n%s", tt.in, diff)
			}
			wantStr := tt.str
			if wantStr == "" && tt.want != nil {
				wantStr = tt.in
			}
			if s := got.String(); s != wantStr {
				t.Errorf("String() = %q, want %q", s, wantStr)
			}
		})
	}
}

func TestParseSelectorRejects(t *testing.T) {
	tests := []string{
		",",
		"env=prod,",
		",env=prod",
		"env=prod,,gpu",
		"=prod",
		"!=prod",
		"!",
		"!!legacy",
		"env!prod",
		"env=!prod",
		"env===prod",
		"env=pr od",
		"env=prod=x",
		"env in (a,b)",
		"Env Var=x",
		"-env=x",
		"env=-x",
		"a/b/c=x",
		"/x=y",
		"!env=prod",
		"env=" + strings.Repeat("v", 64),
		strings.Repeat("k", 64),
		strings.Repeat("a,", registry.MaxSelectorRequirements) + "a",
		strings.Repeat("a", registry.MaxSelectorLen+1),
		"env=pröd",
		"env=prod\x00",
	}
	for _, in := range tests {
		_, err := registry.ParseSelector(in)
		e := errs.As(err)
		if e == nil || e.Code != errs.Invalid || len(e.Fields) != 1 || e.Fields[0].Name != "query.selector" {
			t.Errorf("ParseSelector(%.40q) = %v, want errs.Field(query.selector)", in, err)
		}
	}
	// The bounds themselves are accepted.
	ok := strings.TrimSuffix(strings.Repeat("a,", registry.MaxSelectorRequirements), ",")
	if _, err := registry.ParseSelector(ok); err != nil {
		t.Errorf("%d terms rejected: %v", registry.MaxSelectorRequirements, err)
	}
}

func TestSelectorMatches(t *testing.T) {
	labels := map[string]string{"env": "prod", "tier": "web", "gpu": "", "example.com/team": "a"}
	tests := []struct {
		sel  string
		want bool
	}{
		{"", true},
		{"env=prod", true},
		{"env==prod", true},
		{"env=dev", false},
		{"missing=x", false},
		{"env!=dev", true},
		{"env!=prod", false},
		{"missing!=x", true}, // != also selects agents without the label, as in Kubernetes
		{"gpu", true},
		{"gpu=", true},
		{"gpu!=", false},
		{"missing", false},
		{"!missing", true},
		{"!gpu", false},
		{"example.com/team=a", true},
		{"env=prod,tier!=cache,gpu,!legacy", true},
		{"env=prod,tier=cache", false},
		{"env=prod,env=dev", false},
	}
	for _, tt := range tests {
		sel, err := registry.ParseSelector(tt.sel)
		if err != nil {
			t.Fatalf("ParseSelector(%q): %v", tt.sel, err)
		}
		if got := sel.Matches(labels); got != tt.want {
			t.Errorf("%q.Matches = %v, want %v", tt.sel, got, tt.want)
		}
	}
	var empty registry.LabelSelector
	if !empty.Matches(nil) {
		t.Error("empty selector does not match no labels")
	}
	sel, _ := registry.ParseSelector("!legacy")
	if !sel.Matches(nil) {
		t.Error("!legacy does not match nil labels")
	}
}

// FuzzParseSelector: ParseSelector never panics, fails only with errs.Field("query.selector"),
// and what it accepts prints canonically to a selector that parses back identically.
func FuzzParseSelector(f *testing.F) {
	for _, s := range []string{"env=prod,tier!=cache,gpu,!legacy", "a==b", " x = y ", "k=", "!"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := registry.ParseSelector(s)
		if err != nil {
			if e := errs.As(err); e == nil || len(e.Fields) != 1 || e.Fields[0].Name != "query.selector" {
				t.Fatalf("ParseSelector(%q) = %v, want errs.Field(query.selector)", s, err)
			}
			return
		}
		again, err := registry.ParseSelector(sel.String())
		if err != nil {
			t.Fatalf("canonical form %q of %q rejected: %v", sel.String(), s, err)
		}
		if diff := cmp.Diff(sel, again); diff != "" {
			t.Fatalf("round trip of %q (-first +second):\n%s", s, diff)
		}
		// Matching must be total: any label set, including the selector's own keys.
		labels := map[string]string{}
		for _, r := range sel {
			labels[r.Key] = r.Value
		}
		sel.Matches(labels)
		sel.Matches(nil)
	})
}
