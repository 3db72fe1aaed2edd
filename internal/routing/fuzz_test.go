package routing_test

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/routing"
)

// wireSpec is the JSON a client sends, as the HTTP layer decodes it.
type wireSpec struct {
	Targets      []routing.Target `json:"targets"`
	StickyHeader string           `json:"sticky_header"`
	TimeoutMs    int              `json:"timeout_ms"`
	Retryable    bool             `json:"retryable"`
	Hedge        *routing.Hedge   `json:"hedge"`
}

// FuzzNormalize feeds client route specs to validation: it never panics, refuses with an
// errs.Invalid naming fields, and what it accepts is canonical (normalizing again changes nothing)
// and within the limits.
func FuzzNormalize(f *testing.F) {
	for _, seed := range []string{
		`{"targets":[{"agent_id":"agt_01jz0000000000000000000001","weight":1}]}`,
		`{"targets":[{"version":"v1.2","weight":90},{"version":"1.3.0-rc.1+b","weight":10,"priority":1}],"sticky_header":"x-user","timeout_ms":2000,"retryable":true,"hedge":{"delay_ms":100,"max_extra":2}}`,
		`{"targets":[{"version":"1","agent_id":"agt_x","weight":-1,"priority":99}],"sticky_header":"Authorization"}`,
		`{"targets":[{"version":"01.2"},{"version":"1.2."},{"version":"v"}],"hedge":{"delay_ms":0}}`,
		`{"targets":[]}`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		var w wireSpec
		if json.Unmarshal([]byte(in), &w) != nil {
			return
		}
		spec := routing.Spec{Targets: w.Targets, StickyHeader: w.StickyHeader, TimeoutMs: w.TimeoutMs, Retryable: w.Retryable, Hedge: w.Hedge}
		got, err := spec.Normalize()
		if err != nil {
			if e := errs.As(err); e == nil || e.Code != errs.Invalid || len(e.Fields) == 0 {
				t.Fatalf("Normalize refused with %v, want an errs.Invalid naming fields", err)
			}
			return
		}
		again, err := got.Normalize()
		if err != nil {
			t.Fatalf("Normalize refuses its own output %+v: %v", got, err)
		}
		if diff := cmp.Diff(got, again); diff != "" {
			t.Fatalf("Normalize is not idempotent (-once +twice):\n%s", diff)
		}
		if len(got.Targets) < 1 || len(got.Targets) > routing.MaxTargets {
			t.Fatalf("%d targets accepted", len(got.Targets))
		}
		for _, tg := range got.Targets {
			if (tg.AgentID == "") == (tg.Version == "") || tg.Weight < 0 || tg.Weight > routing.MaxWeight || tg.Priority < 0 || tg.Priority > routing.MaxPriority {
				t.Fatalf("target %+v accepted", tg)
			}
		}
	})
}

// FuzzPreconditions feeds conditional headers: Check never panics, and a header listing the
// current tag passes If-Match unless the list is malformed (then it is refused as invalid input
// naming the header, never as a failed precondition).
func FuzzPreconditions(f *testing.F) {
	cur := routing.Route{TenantID: tenantA, Capability: "c", Revision: 4, CreatedAt: t0}
	for _, seed := range []string{"", "*", cur.ETag(), `"a", ` + cur.ETag(), "W/" + cur.ETag(), `"`, ",,,", "\x00"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, h string) {
		for _, r := range []*routing.Route{nil, &cur} {
			_ = routing.Preconditions{IfMatch: h}.Check(r)
			_ = routing.Preconditions{IfNoneMatch: h}.Check(r)
		}
		if len(h) < 512 {
			err := (routing.Preconditions{IfMatch: h + "," + cur.ETag()}).Check(&cur)
			if e := errs.As(err); err != nil && (e == nil || e.Code != errs.Invalid || len(e.Fields) != 1 || e.Fields[0].Name != "header.If-Match") {
				t.Fatalf("If-Match %q listing the current tag: %v", h+","+cur.ETag(), err)
			}
		}
	})
}
