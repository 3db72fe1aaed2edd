package apikey

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/principal"
	"github.com/nops-kernel/nops/internal/user"
)

func TestCreateVerifyRoundTrip(t *testing.T) {
	h := newHarness(t)
	exp := h.clk.Now().Add(90 * 24 * time.Hour)
	k, raw, err := h.svc.Create(as(t, adminA), CreateInput{
		Name: "deploy bot", Role: user.RoleOperator, AgentID: "agt_a1",
		Scopes: []string{"agents:write", "agents:read"}, ExpiresAt: exp.In(time.FixedZone("CET", 3600)),
	})
	if err != nil {
		t.Fatal(err)
	}
	id, secret, err := Parse(raw)
	if err != nil {
		t.Fatalf("the raw key does not parse: %v", err)
	}
	want := Key{
		ID: id, TenantID: "ten_a", AgentID: "agt_a1", Name: "deploy bot", Role: user.RoleOperator,
		Scopes: []string{"agents:read", "agents:write"}, CreatedBy: adminA.Subject,
		Hash: testPepper(t, "v1").digest(id, secret), PepperVersion: "v1",
		CreatedAt: h.clk.Now(), ExpiresAt: exp,
	}
	if diff := cmp.Diff(want, k); diff != "" {
		t.Fatalf("created key (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(k, h.store.get(t, id)); diff != "" {
		t.Fatalf("stored key differs from the returned one:\n%s", diff)
	}
	got, err := h.svc.Verify(t.Context(), raw)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(k, got); diff != "" {
		t.Fatalf("verified key:\n%s", diff)
	}
	wantP := principal.Principal{Subject: id, Tenant: "ten_a", Roles: []string{user.RoleOperator},
		Scopes: []string{"agents:read", "agents:write"}, TokenID: id, ExpiresAt: exp}
	if diff := cmp.Diff(wantP, got.Principal()); diff != "" {
		t.Fatalf("principal:\n%s", diff)
	}
	// Two keys never share an ID or a secret.
	_, raw2 := h.create(t, CreateInput{})
	id2, secret2, _ := Parse(raw2)
	if id2 == id || secret2 == secret {
		t.Fatal("two keys share a part")
	}
}

func TestCreateBySuperAdminNamesTenant(t *testing.T) {
	h := newHarness(t)
	k, raw, err := h.svc.Create(as(t, superAdmin), CreateInput{TenantID: "ten_b", Name: "n", Role: user.RoleAdmin, Scopes: []string{"system:read"}})
	if err != nil {
		t.Fatal(err)
	}
	if k.TenantID != "ten_b" || k.CreatedBy != superAdmin.Subject {
		t.Fatalf("key %+v", k)
	}
	if _, err := h.svc.Verify(t.Context(), raw); err != nil {
		t.Fatal(err)
	}
	// A tenant principal may name its own tenant.
	if _, _, err := h.svc.Create(as(t, adminA), CreateInput{TenantID: "ten_a", Name: "n", Role: user.RoleViewer}); err != nil {
		t.Fatal(err)
	}
}

func TestCreateValidation(t *testing.T) {
	h := newHarness(t)
	future := h.clk.Now().Add(time.Hour)
	valid := CreateInput{Name: "ok", Role: user.RoleViewer, Scopes: []string{"agents:read"}, ExpiresAt: future}
	tooMany := make([]string, MaxScopes+1)
	for i := range tooMany {
		tooMany[i] = "s" + strings.Repeat("x", i)
	}
	allHeld := principal.Principal{Subject: "usr_x", Tenant: "ten_a", Roles: []string{user.RoleAdmin}, Scopes: tooMany}
	tests := []struct {
		name  string
		p     principal.Principal
		edit  func(*CreateInput)
		field string
	}{
		{"empty name", adminA, func(in *CreateInput) { in.Name = "  " }, "body.name"},
		{"long name", adminA, func(in *CreateInput) { in.Name = strings.Repeat("é", MaxNameLen+1) }, "body.name"},
		{"control in name", adminA, func(in *CreateInput) { in.Name = "a\x1bb" }, "body.name"},
		{"invalid UTF-8 name", adminA, func(in *CreateInput) { in.Name = "a\xffb" }, "body.name"},
		{"no role", adminA, func(in *CreateInput) { in.Role = "" }, "body.role"},
		{"unknown role", adminA, func(in *CreateInput) { in.Role = "ROOT" }, "body.role"},
		{"SUPER_ADMIN role", superAdmin, func(in *CreateInput) { in.TenantID = "ten_a"; in.Role = user.RoleSuperAdmin }, "body.role"},
		{"role above the caller's", viewerA, func(in *CreateInput) { in.Role = user.RoleOperator }, "body.role"},
		{"too many scopes", allHeld, func(in *CreateInput) { in.Scopes = tooMany }, "body.scopes"},
		{"empty scope", adminA, func(in *CreateInput) { in.Scopes = []string{"agents:read", ""} }, "body.scopes[1]"},
		{"scope with space", adminA, func(in *CreateInput) { in.Scopes = []string{"agents read"} }, "body.scopes[0]"},
		{"scope with quote", adminA, func(in *CreateInput) { in.Scopes = []string{`a"b`} }, "body.scopes[0]"},
		{"scope with backslash", adminA, func(in *CreateInput) { in.Scopes = []string{`a\b`} }, "body.scopes[0]"},
		{"scope too long", adminA, func(in *CreateInput) { in.Scopes = []string{strings.Repeat("a", MaxScopeLen+1)} }, "body.scopes[0]"},
		{"duplicate scope", adminA, func(in *CreateInput) { in.Scopes = []string{"agents:read", "agents:write", "agents:read"} }, "body.scopes[2]"},
		{"scope the caller lacks", adminA, func(in *CreateInput) { in.Scopes = []string{"system:write"} }, "body.scopes[0]"},
		{"expiry now", adminA, func(in *CreateInput) { in.ExpiresAt = h.clk.Now() }, "body.expires_at"},
		{"expiry past", adminA, func(in *CreateInput) { in.ExpiresAt = h.clk.Now().Add(-time.Second) }, "body.expires_at"},
		{"bad agent id", adminA, func(in *CreateInput) { in.AgentID = "agt/../x" }, "body.agent_id"},
		{"super admin without tenant", superAdmin, func(in *CreateInput) {}, "body.tenant"},
		{"bad tenant", superAdmin, func(in *CreateInput) { in.TenantID = "ten a" }, "body.tenant"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := valid
			tt.edit(&in)
			_, raw, err := h.svc.Create(as(t, tt.p), in)
			requireField(t, err, tt.field)
			if raw != "" {
				t.Fatal("a raw key came with an error")
			}
		})
	}
	if _, _, err := h.svc.Create(as(t, allHeld), CreateInput{Name: "max", Role: user.RoleViewer, Scopes: tooMany[:MaxScopes]}); err != nil {
		t.Fatalf("%d scopes refused: %v", MaxScopes, err)
	}
	if len(h.store.keys) != 1 {
		t.Fatalf("%d keys stored, want only the valid one", len(h.store.keys))
	}
}

func TestCreateRefusals(t *testing.T) {
	h := newHarness(t)
	in := CreateInput{Name: "n", Role: user.RoleViewer}

	_, _, err := h.svc.Create(t.Context(), in)
	requireCode(t, err, errs.Unauthenticated)

	// Another tenant is answered as if it did not exist.
	other := in
	other.TenantID = "ten_b"
	_, _, err = h.svc.Create(as(t, adminA), other)
	requireCode(t, err, errs.NotFound)

	// An agent of another tenant (or none) is the store's not found.
	agent := in
	agent.AgentID = "agt_b1"
	_, _, err = h.svc.Create(as(t, adminA), agent)
	requireCode(t, err, errs.NotFound)

	h.store.setErr(errs.New(errs.Unavailable, "database down"))
	_, raw, err := h.svc.Create(as(t, adminA), in)
	requireCode(t, err, errs.Unavailable)
	if raw != "" {
		t.Fatal("a raw key came with a store failure")
	}
}

func TestTenantIsolation(t *testing.T) {
	h := newHarness(t)
	k, _ := h.create(t, CreateInput{})
	ctxB := as(t, adminB)

	_, err := h.svc.Get(ctxB, k.ID)
	requireCode(t, err, errs.NotFound)
	_, _, err = h.svc.Rotate(ctxB, k.ID, 0)
	requireCode(t, err, errs.NotFound)
	_, err = h.svc.Revoke(ctxB, k.ID)
	requireCode(t, err, errs.NotFound)
	_, err = h.svc.List(ctxB, ListInput{TenantID: "ten_a"})
	requireCode(t, err, errs.NotFound)
	page, err := h.svc.List(ctxB, ListInput{})
	if err != nil || len(page.Keys) != 0 {
		t.Fatalf("tenant B lists %d keys, %v", len(page.Keys), err)
	}
	// The answer for another tenant's key is the answer for a key that does not exist.
	_, errOther := h.svc.Get(ctxB, k.ID)
	_, errMissing := h.svc.Get(ctxB, goodID)
	_, errMalformed := h.svc.Get(ctxB, "../etc/passwd")
	for _, e := range []error{errMissing, errMalformed} {
		if a, b := errs.As(errOther), errs.As(e); a.Code != b.Code || a.Message != b.Message {
			t.Fatalf("errors differ: %v vs %v", errOther, e)
		}
	}
	if got := h.store.get(t, k.ID); !got.RevokedAt.IsZero() || got.PrevHash != nil {
		t.Fatal("tenant B changed tenant A's key")
	}

	// The owner and a principal above tenants see it.
	for _, p := range []principal.Principal{adminA, superAdmin} {
		got, err := h.svc.Get(as(t, p), k.ID)
		if err != nil || got.ID != k.ID {
			t.Fatalf("Get as %s = %v", p.Subject, err)
		}
	}
	_, err = h.svc.Get(t.Context(), k.ID)
	requireCode(t, err, errs.Unauthenticated)
}

func TestList(t *testing.T) {
	h := newHarness(t)
	var ids []string
	for range 5 {
		k, _ := h.create(t, CreateInput{})
		ids = append(ids, k.ID)
		h.clk.Advance(time.Millisecond) // ULIDs of later milliseconds sort after
	}
	if _, _, err := h.svc.Create(as(t, adminB), CreateInput{Name: "b", Role: user.RoleViewer}); err != nil {
		t.Fatal(err)
	}
	var got []string
	var pages int
	in := ListInput{Limit: 2}
	for {
		page, err := h.svc.List(as(t, adminA), in)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, k := range page.Keys {
			got = append(got, k.ID)
		}
		if page.NextCursor == "" {
			break
		}
		in.Cursor = page.NextCursor
	}
	if diff := cmp.Diff(ids, got); diff != "" || pages != 3 {
		t.Fatalf("listed in %d pages (-want +got):\n%s", pages, diff)
	}
	// Exactly a full last page has no next cursor.
	page, err := h.svc.List(as(t, adminA), ListInput{Limit: 5})
	if err != nil || len(page.Keys) != 5 || page.NextCursor != "" {
		t.Fatalf("List(limit 5) = %d keys, cursor %q, %v", len(page.Keys), page.NextCursor, err)
	}
	page, err = h.svc.List(as(t, superAdmin), ListInput{TenantID: "ten_b"})
	if err != nil || len(page.Keys) != 1 {
		t.Fatalf("super admin lists %d keys of ten_b, %v", len(page.Keys), err)
	}

	for name, tt := range map[string]struct {
		p     principal.Principal
		in    ListInput
		field string
	}{
		"limit too large":  {adminA, ListInput{Limit: MaxListLimit + 1}, "query.limit"},
		"negative limit":   {adminA, ListInput{Limit: -1}, "query.limit"},
		"foreign cursor":   {adminA, ListInput{Cursor: "usr_1"}, "query.cursor"},
		"no tenant":        {superAdmin, ListInput{}, "query.tenant"},
		"malformed tenant": {superAdmin, ListInput{TenantID: "ten a"}, "query.tenant"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := h.svc.List(as(t, tt.p), tt.in)
			requireField(t, err, tt.field)
		})
	}
	h.store.setErr(errs.New(errs.Unavailable, "down"))
	_, err = h.svc.List(as(t, adminA), ListInput{})
	requireCode(t, err, errs.Unavailable)
}

func TestRevoke(t *testing.T) {
	h := newHarness(t)
	k, raw := h.create(t, CreateInput{})
	h.clk.Advance(time.Minute)
	revoked, err := h.svc.Revoke(as(t, adminA), k.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !revoked.RevokedAt.Equal(h.clk.Now()) || !h.store.get(t, k.ID).RevokedAt.Equal(h.clk.Now()) {
		t.Fatalf("RevokedAt = %s, stored %s", revoked.RevokedAt, h.store.get(t, k.ID).RevokedAt)
	}
	_, err = h.svc.Verify(t.Context(), raw)
	requireRejected(t, err)
	_, err = h.svc.Revoke(as(t, adminA), k.ID)
	requireCode(t, err, errs.Conflict)
	_, err = h.svc.Revoke(as(t, adminA), goodID)
	requireCode(t, err, errs.NotFound)
	_, err = h.svc.Revoke(t.Context(), k.ID)
	requireCode(t, err, errs.Unauthenticated)
}

func TestNewServiceRefusesBadSetup(t *testing.T) {
	ps := peppersOf(t, testPepper(t, "v1"))
	if _, err := NewService(nil, ps, nil, nil, Options{}); err == nil {
		t.Fatal("nil store accepted")
	}
	if _, err := NewService(newMemStore(), Peppers{}, nil, nil, Options{}); err == nil {
		t.Fatal("no pepper accepted")
	}
	for _, g := range []time.Duration{-time.Second, MaxGrace + time.Second} {
		if _, err := NewService(newMemStore(), ps, nil, nil, Options{DefaultGrace: g}); err == nil {
			t.Fatalf("default grace %s accepted", g)
		}
	}
	svc, err := NewService(newMemStore(), ps, nil, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if svc.defaultGrace != DefaultGrace {
		t.Fatalf("default grace %s", svc.defaultGrace)
	}
}

func TestKeyLogValueOmitsDigests(t *testing.T) {
	h := newHarness(t)
	k, _ := h.create(t, CreateInput{AgentID: "agt_a1"})
	k.PrevHash = []byte("previous-digest-bytes-previous!!")
	buf := &logBuffer{}
	buf.logger().Info("key", "key", k)
	text := buf.String()
	for _, want := range []string{k.ID, "ten_a", "agt_a1", user.RoleOperator, "v1"} {
		if !strings.Contains(text, want) {
			t.Errorf("log lacks %q: %s", want, text)
		}
	}
	if strings.Contains(text, "previous-digest") || strings.Contains(text, "hash") {
		t.Fatalf("log shows a digest: %s", text)
	}
}

// errBoom is a store failure that is not an errs.Error.
var errBoom = errors.New("boom")

func TestStoreFailuresAreNotHidden(t *testing.T) {
	h := newHarness(t)
	k, raw := h.create(t, CreateInput{})
	h.store.setErr(errBoom)
	_, err := h.svc.Verify(t.Context(), raw)
	if !errors.Is(err, errBoom) || errs.Is(err, errs.Unauthenticated) {
		t.Fatalf("Verify with a failing store = %v, want the store error, not a 401", err)
	}
	_, err = h.svc.Get(as(t, adminA), k.ID)
	if !errors.Is(err, errBoom) {
		t.Fatalf("Get = %v", err)
	}
}
