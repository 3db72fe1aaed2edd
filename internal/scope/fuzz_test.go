package scope_test

import (
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nops-kernel/nops/internal/scope"
)

// FuzzParse: whatever Parse accepts renders back to the same text, is valid, covers itself and is
// covered by *:*:*; nothing it accepts contains a partial wildcard.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"registry:heartbeat:ten_x", "invoke:*:ten_x", "*:*:*", "a:b", "a:b:c:d", "reg*:a:b", ":::", "a::b", "x:y:\x00", "invoke:text.summarize:ten_01jz8y3w6v6r3b5q8x9k2m4n7q"} {
		f.Add(s)
	}
	star := scope.MustParse("*:*:*")
	f.Fuzz(func(t *testing.T, in string) {
		s, err := scope.Parse(in)
		if err != nil {
			return
		}
		if s.String() != in {
			t.Fatalf("Parse(%q).String() = %q", in, s.String())
		}
		if !s.Valid() || !s.Covers(s) || !star.Covers(s) {
			t.Fatalf("accepted %q is not valid, reflexive and covered by *:*:*", in)
		}
		for _, seg := range []string{s.Service, s.Operation, s.Tenant} {
			if seg != scope.Wildcard && len(seg) > 0 {
				for i := 0; i < len(seg); i++ {
					if seg[i] == '*' || seg[i] == ':' {
						t.Fatalf("accepted %q has a segment %q with %q", in, seg, seg[i])
					}
				}
			}
		}
	})
}

// FuzzParseWorkload: a SPIFFE ID path accepted as a workload yields scopes (default table) that
// are valid and never reach a tenant other than the workload's own.
func FuzzParseWorkload(f *testing.F) {
	for _, p := range []string{"/tenant/" + tenantX + "/agent/" + agentA, "/kernel/n1", "/tenant/ten_/agent/agt_", "/tenant/*/agent/agt_1", "/kernel/*", "/a/b/c/d", "/tenant/ten_x/agent/agt_y/z"} {
		f.Add(p)
	}
	table := scope.DefaultTable()
	f.Fuzz(func(t *testing.T, path string) {
		id, err := spiffeid.FromPath(td, path)
		if err != nil {
			return
		}
		w, err := scope.ParseWorkload(id, td)
		if err != nil {
			return
		}
		scopes, err := table.For(w)
		if err != nil {
			t.Fatalf("For(%+v): %v", w, err)
		}
		for _, s := range scopes {
			if !s.Valid() {
				t.Fatalf("invalid scope %+v for %s", s, id)
			}
			if w.Kind == scope.KindAgent && s.Tenant != w.Tenant {
				t.Fatalf("agent %s granted %s outside its tenant", id, s)
			}
		}
	})
}
