package policy_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/policy"
	"github.com/nops-kernel/nops/internal/principal"
)

var t0 = time.Date(2026, 1, 6, 10, 0, 0, 123456789, time.UTC)

func newService(t *testing.T) (*policy.Service, *fakeStore, *policy.Engine) {
	t.Helper()
	st := newFakeStore(tenantA, tenantB)
	e, err := policy.NewEngine(st, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := policy.NewService(st, e, policy.ServiceOptions{Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatal(err)
	}
	return s, st, e
}

func asTenant(t *testing.T, tenantID string) context.Context {
	return principal.NewContext(t.Context(), principal.Principal{Subject: "usr_" + tenantID, Tenant: tenantID, Roles: []string{"ADMIN"}})
}

func asSuper(t *testing.T) context.Context {
	return principal.NewContext(t.Context(), principal.Principal{Subject: "usr_admin", Roles: []string{"SUPER_ADMIN"}})
}

func spec(name string, effect policy.Effect, expr string) policy.Spec {
	return policy.Spec{Name: name, Effect: effect, Expression: expr}
}

// wantField fails unless err is an errs.Invalid naming field with a reason holding reason.
func wantField(t *testing.T, err error, field, reason string) {
	t.Helper()
	e := errs.As(err)
	if e == nil || e.Code != errs.Invalid {
		t.Fatalf("error %v, want an errs.Invalid naming %s", err, field)
	}
	for _, f := range e.Fields {
		if f.Name == field && strings.Contains(f.Reason, reason) {
			return
		}
	}
	t.Fatalf("error fields %+v, want %s with a reason holding %q", e.Fields, field, reason)
}

func wantCode(t *testing.T, err error, code errs.Code) {
	t.Helper()
	if got := errs.CodeOf(err); got != code {
		t.Fatalf("error %v (code %q), want code %q", err, got, code)
	}
}

// Refusals first.
func TestServiceCreateRefuses(t *testing.T) {
	s, st, _ := newService(t)
	ctxA := asTenant(t, tenantA)
	_, err := s.Create(t.Context(), policy.CreateInput{Spec: spec("x", policy.EffectDeny, "true")})
	wantCode(t, err, errs.Unauthenticated)

	tests := []struct {
		name         string
		ctx          context.Context
		in           policy.CreateInput
		field, cause string // an errs.Invalid naming field; else code
		code         errs.Code
	}{
		{"syntax error", ctxA, policy.CreateInput{Spec: spec("x", policy.EffectDeny, `action == `)}, "body.expression", "1:11: Syntax error", ""},
		{"unknown field", ctxA, policy.CreateInput{Spec: spec("x", policy.EffectDeny, `resource.owner == "me"`)}, "body.expression", "undefined field 'owner'", ""},
		{"not a bool", ctxA, policy.CreateInput{Spec: spec("x", policy.EffectDeny, `resource.labels`)}, "body.expression", "must be a bool", ""},
		{"too costly", ctxA, policy.CreateInput{Spec: spec("x", policy.EffectDeny, `principal.scopes.all(a, principal.scopes.all(b, a != b))`)}, "body.expression", "estimated worst-case cost", ""},
		{"no name", ctxA, policy.CreateInput{Spec: spec("", policy.EffectDeny, "true")}, "body.name", "required", ""},
		{"control character in name", ctxA, policy.CreateInput{Spec: spec("a\tb", policy.EffectDeny, "true")}, "body.name", "control characters", ""},
		{"long description", ctxA, policy.CreateInput{Spec: policy.Spec{Name: "x", Effect: policy.EffectDeny, Expression: "true", Description: strings.Repeat("d", policy.MaxDescriptionLen+1)}}, "body.description", "at most", ""},
		{"bad effect", ctxA, policy.CreateInput{Spec: spec("x", "permit", "true")}, "body.effect", "allow", ""},
		{"another tenant", ctxA, policy.CreateInput{TenantID: tenantB, Spec: spec("x", policy.EffectDeny, "true")}, "", "", errs.NotFound},
		{"super admin naming a malformed tenant", asSuper(t), policy.CreateInput{TenantID: "acme", Spec: spec("x", policy.EffectDeny, "true")}, "body.tenant", "tenant ID", ""},
		{"super admin naming an unknown tenant", asSuper(t), policy.CreateInput{TenantID: "ten_01jzcccc000000000000000000", Spec: spec("x", policy.EffectDeny, "true")}, "", "", errs.NotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Create(tt.ctx, tt.in)
			if tt.field != "" {
				wantField(t, err, tt.field, tt.cause)
			} else {
				wantCode(t, err, tt.code)
			}
		})
	}
	if len(st.policies) != 0 {
		t.Fatalf("refused creates stored %d policies", len(st.policies))
	}

	if _, err := s.Create(ctxA, policy.CreateInput{Spec: spec("dup", policy.EffectDeny, "true")}); err != nil {
		t.Fatal(err)
	}
	_, err = s.Create(ctxA, policy.CreateInput{Spec: spec("dup", policy.EffectAllow, "true")})
	wantCode(t, err, errs.Conflict)
}

func TestServiceCreateAndScope(t *testing.T) {
	s, _, e := newService(t)
	ctxA, ctxB, super := asTenant(t, tenantA), asTenant(t, tenantB), asSuper(t)
	off := false
	pa, err := s.Create(ctxA, policy.CreateInput{Spec: policy.Spec{Name: "no updates", Description: "line\nline", Effect: policy.EffectDeny, Expression: `action == "agents.update"`}})
	if err != nil {
		t.Fatal(err)
	}
	want := policy.Policy{ID: pa.ID, TenantID: tenantA, Name: "no updates", Description: "line\nline", Effect: policy.EffectDeny,
		Expression: `action == "agents.update"`, Enabled: true, CreatedAt: t0.Truncate(time.Microsecond), UpdatedAt: t0.Truncate(time.Microsecond), Version: 1}
	if diff := cmp.Diff(want, pa); diff != "" {
		t.Errorf("created policy (-want +got):\n%s", diff)
	}
	if !policy.ValidID(pa.ID) {
		t.Errorf("ID %q is not a policy ID", pa.ID)
	}
	global, err := s.Create(super, policy.CreateInput{Spec: policy.Spec{Name: "global", Effect: policy.EffectDeny, Expression: "false", Enabled: &off}})
	if err != nil {
		t.Fatal(err)
	}
	if global.TenantID != "" || global.Enabled {
		t.Errorf("global policy %+v, want no tenant and disabled", global)
	}
	forB, err := s.Create(super, policy.CreateInput{TenantID: tenantB, Spec: spec("b's", policy.EffectDeny, "false")})
	if err != nil || forB.TenantID != tenantB {
		t.Fatalf("super admin creating for tenant B: %+v, %v", forB, err)
	}

	// Tenants see their own policies only; the super admin sees all.
	for _, c := range []struct {
		ctx  context.Context
		id   string
		code errs.Code
	}{
		{ctxA, pa.ID, ""}, {ctxB, pa.ID, errs.NotFound}, {ctxA, global.ID, errs.NotFound}, {super, pa.ID, ""},
		{super, global.ID, ""}, {ctxA, "pol_nonsense", errs.NotFound}, {ctxA, "pol_01jzzzzz000000000000000000", errs.NotFound},
	} {
		_, err := s.Get(c.ctx, c.id)
		wantCode(t, err, c.code)
	}

	// The change is in force in this replica once refreshed (control does it after commit).
	s.Refresh(t.Context())
	wantDecision(t, e.Evaluate(t.Context(), in(tenantA)), false, pa.ID, "denied by policy "+pa.ID+" (no updates)")
	wantDecision(t, e.Evaluate(t.Context(), in(tenantB)), true, "", "no deny policy matched")
}

func TestServiceList(t *testing.T) {
	s, _, _ := newService(t)
	ctxA, super := asTenant(t, tenantA), asSuper(t)
	var ids []string
	for _, name := range []string{"p1", "p2", "p3", "p4", "p5"} {
		p, err := s.Create(ctxA, policy.CreateInput{Spec: spec(name, policy.EffectDeny, "false")})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, p.ID)
	}
	g, err := s.Create(super, policy.CreateInput{Spec: spec("g", policy.EffectDeny, "false")})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	cursor := ""
	for range 5 {
		page, err := s.List(ctxA, policy.ListInput{Cursor: cursor, Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range page.Policies {
			got = append(got, p.ID)
		}
		if cursor = page.NextCursor; cursor == "" {
			break
		}
	}
	if diff := cmp.Diff(ids, got); diff != "" {
		t.Errorf("tenant A's pages (-want +got):\n%s", diff)
	}
	page, err := s.List(super, policy.ListInput{})
	if err != nil || len(page.Policies) != 1 || page.Policies[0].ID != g.ID {
		t.Fatalf("super admin listing the global policies: %+v, %v", page, err)
	}
	_, err = s.List(ctxA, policy.ListInput{TenantID: tenantB})
	wantCode(t, err, errs.NotFound)
	_, err = s.List(ctxA, policy.ListInput{Limit: policy.MaxListLimit + 1})
	wantField(t, err, "query.limit", "between")
	_, err = s.List(ctxA, policy.ListInput{Cursor: "nope"})
	wantField(t, err, "query.cursor", "cursor")
}

func TestServiceUpdate(t *testing.T) {
	s, _, _ := newService(t)
	ctxA := asTenant(t, tenantA)
	p, err := s.Create(ctxA, policy.CreateInput{Spec: spec("p", policy.EffectDeny, "false")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctxA, policy.CreateInput{Spec: spec("other", policy.EffectDeny, "false")}); err != nil {
		t.Fatal(err)
	}
	next := spec("p renamed", policy.EffectAllow, `principal.role == "ADMIN"`)

	// Refusals first.
	_, err = s.Update(ctxA, p.ID, "", next)
	wantField(t, err, "header.If-Match", "required")
	_, err = s.Update(ctxA, p.ID, `"stale"`, next)
	wantCode(t, err, errs.PreconditionFailed)
	_, err = s.Update(ctxA, p.ID, p.ETag(), spec("p", policy.EffectDeny, "principal.rolee"))
	wantField(t, err, "body.expression", "undefined field 'rolee'")
	_, err = s.Update(ctxA, p.ID, p.ETag(), spec("other", policy.EffectDeny, "false"))
	wantCode(t, err, errs.Conflict)
	_, err = s.Update(asTenant(t, tenantB), p.ID, "*", next)
	wantCode(t, err, errs.NotFound)

	ch, err := s.Update(ctxA, p.ID, `W/"weak", `+p.ETag(), next)
	if err != nil {
		t.Fatal(err)
	}
	if !ch.Changed || ch.After.Version != 2 || ch.After.Name != "p renamed" || ch.After.Effect != policy.EffectAllow || ch.Before != p {
		t.Fatalf("change %+v", ch)
	}
	_, err = s.Update(ctxA, p.ID, p.ETag(), next)
	wantCode(t, err, errs.PreconditionFailed)
	same, err := s.Update(ctxA, p.ID, ch.After.ETag(), next)
	if err != nil || same.Changed || same.After.Version != 2 {
		t.Fatalf("an unchanged update: %+v, %v", same, err)
	}
}

func TestServiceDelete(t *testing.T) {
	s, st, _ := newService(t)
	ctxA := asTenant(t, tenantA)
	p, err := s.Create(ctxA, policy.CreateInput{Spec: spec("p", policy.EffectDeny, "false")})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Delete(asTenant(t, tenantB), p.ID, "")
	wantCode(t, err, errs.NotFound)
	_, err = s.Delete(ctxA, p.ID, `"stale"`)
	wantCode(t, err, errs.PreconditionFailed)
	got, err := s.Delete(ctxA, p.ID, p.ETag())
	if err != nil || got.ID != p.ID {
		t.Fatalf("Delete: %+v, %v", got, err)
	}
	_, err = s.Delete(ctxA, p.ID, "")
	wantCode(t, err, errs.NotFound)
	if len(st.policies) != 0 {
		t.Fatal("the policy is still stored")
	}
}

func TestCheckIfMatch(t *testing.T) {
	p := policy.Policy{ID: "pol_x", Version: 3}
	other := p
	other.Version = 4
	for _, tc := range []struct {
		header string
		code   errs.Code
	}{
		{"", errs.Invalid},
		{"*", ""},
		{p.ETag(), ""},
		{" " + other.ETag() + " , " + p.ETag(), ""},
		{"W/" + p.ETag(), errs.PreconditionFailed},
		{other.ETag(), errs.PreconditionFailed},
		{strings.Repeat("x", 5000), errs.Invalid},
	} {
		err := policy.CheckIfMatch(tc.header, p)
		wantCode(t, err, tc.code)
		if tc.code == errs.PreconditionFailed && !errors.Is(err, policy.ErrVersionConflict) {
			t.Errorf("CheckIfMatch(%q) = %v, want it to wrap ErrVersionConflict", tc.header, err)
		}
	}
}
