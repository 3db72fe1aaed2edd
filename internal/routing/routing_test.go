package routing_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/routing"
)

func TestNormalizeRefuses(t *testing.T) {
	ok := routing.Target{AgentID: agent1, Weight: 1}
	tests := []struct {
		name   string
		spec   routing.Spec
		fields []string
	}{
		{"no targets", routing.Spec{}, []string{"body.targets"}},
		{"too many targets", routing.Spec{Targets: slices.Repeat([]routing.Target{ok}, routing.MaxTargets+1)}, []string{"body.targets"}},
		{"neither agent nor version", routing.Spec{Targets: []routing.Target{ok, {Weight: 1}}}, []string{"body.targets[1]"}},
		{"both agent and version", routing.Spec{Targets: []routing.Target{{AgentID: agent1, Version: "1", Weight: 1}}}, []string{"body.targets[0]"}},
		{"bad agent id", routing.Spec{Targets: []routing.Target{{AgentID: "agt_nope", Weight: 1}}}, []string{"body.targets[0].agent_id"}},
		{"weight too big", routing.Spec{Targets: []routing.Target{ok, {Version: "1.2", Weight: routing.MaxWeight + 1}}}, []string{"body.targets[1].weight"}},
		{"negative weight", routing.Spec{Targets: []routing.Target{{Version: "1", Weight: -1}}}, []string{"body.targets[0].weight"}},
		{"negative priority", routing.Spec{Targets: []routing.Target{{Version: "1", Priority: -1}}}, []string{"body.targets[0].priority"}},
		{"priority too big", routing.Spec{Targets: []routing.Target{{Version: "1", Priority: routing.MaxPriority + 1}}}, []string{"body.targets[0].priority"}},
		{"duplicate agent", routing.Spec{Targets: []routing.Target{ok, {AgentID: agent2}, {AgentID: agent1, Priority: 1}}}, []string{"body.targets[2]"}},
		{"duplicate version after canonicalisation", routing.Spec{Targets: []routing.Target{{Version: "1.2"}, {Version: "v1.2", Priority: 1}}}, []string{"body.targets[1]"}},
		{"every bad target named", routing.Spec{Targets: []routing.Target{{Version: "x"}, ok, {AgentID: agent2, Weight: -5, Priority: 99}}},
			[]string{"body.targets[0].version", "body.targets[2].weight", "body.targets[2].priority"}},
		{"sticky header not a token", routing.Spec{Targets: []routing.Target{ok}, StickyHeader: "X Session"}, []string{"body.sticky_header"}},
		{"sticky header too long", routing.Spec{Targets: []routing.Target{ok}, StickyHeader: strings.Repeat("x", routing.MaxStickyHeaderLen+1)}, []string{"body.sticky_header"}},
		{"timeout negative", routing.Spec{Targets: []routing.Target{ok}, TimeoutMs: -1}, []string{"body.timeout_ms"}},
		{"timeout too long", routing.Spec{Targets: []routing.Target{ok}, TimeoutMs: routing.MaxTimeoutMs + 1}, []string{"body.timeout_ms"}},
		{"hedge without delay", routing.Spec{Targets: []routing.Target{ok}, Hedge: &routing.Hedge{MaxExtra: 1}}, []string{"body.hedge.delay_ms"}},
		{"hedge after the timeout", routing.Spec{Targets: []routing.Target{ok}, TimeoutMs: 100, Hedge: &routing.Hedge{DelayMs: 100, MaxExtra: 1}}, []string{"body.hedge.delay_ms"}},
		{"hedge of too many", routing.Spec{Targets: []routing.Target{ok}, Hedge: &routing.Hedge{DelayMs: 10, MaxExtra: routing.MaxHedgeExtra + 1}}, []string{"body.hedge.max_extra"}},
		{"hedge of none", routing.Spec{Targets: []routing.Target{ok}, Hedge: &routing.Hedge{DelayMs: 10}}, []string{"body.hedge.max_extra"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.spec.Normalize()
			wantCode(t, "Normalize", err, errs.Invalid)
			if diff := cmp.Diff(tt.fields, fieldNames(err)); diff != "" {
				t.Fatalf("fields (-want +got):\n%s", diff)
			}
		})
	}
}

// A credential must never become a routing key: the invoke path would read and hash a secret.
func TestNormalizeRefusesCredentialStickyHeaders(t *testing.T) {
	for _, h := range []string{"Authorization", "authorization", "Proxy-Authorization", "Cookie", "X-API-Key", "x-api-key", "Signature", "signature-input", "Host"} {
		_, err := routing.Spec{Targets: []routing.Target{{AgentID: agent1, Weight: 1}}, StickyHeader: h}.Normalize()
		if diff := cmp.Diff([]string{"body.sticky_header"}, fieldNames(err)); diff != "" {
			t.Errorf("sticky header %q: fields (-want +got):\n%s", h, diff)
		}
	}
}

func TestNormalizeCanonical(t *testing.T) {
	in := routing.Spec{
		Targets: []routing.Target{
			{AgentID: agent1, Weight: 0},
			{Version: "v1.2.3+build.7", Weight: 90},
			{Version: "v2", Weight: 10, Priority: 1},
			{Version: "1.3", Weight: routing.MaxWeight, Priority: routing.MaxPriority},
			{Version: "1.2.3-rc.1", Weight: 5},
		},
		StickyHeader: "x-session-id",
		TimeoutMs:    routing.MaxTimeoutMs,
		Retryable:    true,
		Hedge:        &routing.Hedge{DelayMs: 50, MaxExtra: 2},
	}
	got, err := in.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	want := routing.Spec{
		Targets: []routing.Target{
			{AgentID: agent1, Weight: 0},
			{Version: "1.2.3", Weight: 90},
			{Version: "2", Weight: 10, Priority: 1},
			{Version: "1.3", Weight: routing.MaxWeight, Priority: routing.MaxPriority},
			{Version: "1.2.3-rc.1", Weight: 5},
		},
		StickyHeader: "X-Session-Id",
		TimeoutMs:    routing.MaxTimeoutMs,
		Retryable:    true,
		Hedge:        &routing.Hedge{DelayMs: 50, MaxExtra: 2},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("Normalize (-want +got):\n%s", diff)
	}
	// The result shares nothing with the input.
	got.Targets[0].Weight, got.Hedge.DelayMs = 7, 7
	if in.Targets[0].Weight != 0 || in.Hedge.DelayMs != 50 {
		t.Fatal("Normalize's result shares memory with its input")
	}
}

func TestCanonicalTargetVersion(t *testing.T) {
	for in, want := range map[string]string{
		"1": "1", "v1": "1", "0": "0", "1.2": "1.2", "v10.20": "10.20", "1.2.3": "1.2.3", "v1.2.3-rc.1+b": "1.2.3-rc.1",
	} {
		got, err := routing.CanonicalTargetVersion(in)
		if err != nil || got != want {
			t.Errorf("CanonicalTargetVersion(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "v", "01", "1.02", "1.", ".1", "1.x", "1.2.", "1.2.3.4", "vv1", "1-rc", "latest", strings.Repeat("1", 200)} {
		if got, err := routing.CanonicalTargetVersion(in); err == nil {
			t.Errorf("CanonicalTargetVersion(%q) = %q, want an error", in, got)
		}
	}
}

func TestETag(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	r := routing.Route{TenantID: tenantA, Capability: "text.summarize", Revision: 1, CreatedAt: at}
	others := []routing.Route{
		{TenantID: tenantB, Capability: "text.summarize", Revision: 1, CreatedAt: at},
		{TenantID: tenantA, Capability: "text.translate", Revision: 1, CreatedAt: at},
		{TenantID: tenantA, Capability: "text.summarize", Revision: 2, CreatedAt: at},
		// Deleted and created again: revision 1 again, another tag.
		{TenantID: tenantA, Capability: "text.summarize", Revision: 1, CreatedAt: at.Add(time.Microsecond)},
	}
	tag := r.ETag()
	if !strings.HasPrefix(tag, `"`) || !strings.HasSuffix(tag, `"`) || strings.Contains(tag[1:len(tag)-1], `"`) {
		t.Fatalf("ETag %s is not a quoted strong tag", tag)
	}
	for _, o := range others {
		if o.ETag() == tag {
			t.Errorf("%+v has the ETag of %+v", o, r)
		}
	}
	same := r
	same.Targets, same.UpdatedAt = []routing.Target{{Version: "1", Weight: 1}}, at.Add(time.Hour)
	if same.ETag() != tag {
		t.Error("the ETag depends on more than the key, creation time and revision")
	}
}

func TestPreconditions(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	cur := &routing.Route{TenantID: tenantA, Capability: "c", Revision: 3, CreatedAt: at}
	old := routing.Route{TenantID: tenantA, Capability: "c", Revision: 2, CreatedAt: at}
	tag := cur.ETag()
	tests := []struct {
		name string
		pre  routing.Preconditions
		cur  *routing.Route
		code errs.Code // "" for a pass
	}{
		{"none on an existing route", routing.Preconditions{}, cur, ""},
		{"none on no route", routing.Preconditions{}, nil, ""},
		{"if-match current", routing.Preconditions{IfMatch: tag}, cur, ""},
		{"if-match in a list", routing.Preconditions{IfMatch: `"x", ` + tag}, cur, ""},
		{"if-match any", routing.Preconditions{IfMatch: "*"}, cur, ""},
		{"if-match stale", routing.Preconditions{IfMatch: old.ETag()}, cur, errs.PreconditionFailed},
		{"if-match weak", routing.Preconditions{IfMatch: "W/" + tag}, cur, errs.PreconditionFailed},
		{"if-match on no route", routing.Preconditions{IfMatch: tag}, nil, errs.PreconditionFailed},
		{"if-match any on no route", routing.Preconditions{IfMatch: "*"}, nil, errs.PreconditionFailed},
		{"if-match too long", routing.Preconditions{IfMatch: strings.Repeat("x", 2000)}, cur, errs.Invalid},
		{"if-none-match any on no route", routing.Preconditions{IfNoneMatch: "*"}, nil, ""},
		{"if-none-match any on a route", routing.Preconditions{IfNoneMatch: "*"}, cur, errs.PreconditionFailed},
		{"if-none-match current", routing.Preconditions{IfNoneMatch: tag}, cur, errs.PreconditionFailed},
		{"if-none-match stale", routing.Preconditions{IfNoneMatch: old.ETag()}, cur, ""},
		{"if-none-match too long", routing.Preconditions{IfNoneMatch: strings.Repeat("x", 2000)}, nil, errs.Invalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.pre.Check(tt.cur)
			if got := errs.CodeOf(err); got != tt.code {
				t.Fatalf("Check = %v (code %q), want code %q", err, got, tt.code)
			}
			if tt.code == errs.PreconditionFailed && !errors.Is(err, routing.ErrRevisionConflict) {
				t.Fatalf("Check = %v does not wrap ErrRevisionConflict", err)
			}
		})
	}
}
