package control_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nops-kernel/nops/internal/audit"
	"github.com/nops-kernel/nops/internal/control"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/identity"
	"github.com/nops-kernel/nops/internal/principal"
	"github.com/nops-kernel/nops/internal/sealbox"
	"github.com/nops-kernel/nops/internal/tenant"
	"github.com/nops-kernel/nops/internal/user"
)

const revTTL = time.Hour

var revTD = spiffeid.RequireTrustDomainFromString("nops.test")

// revFixture is a Control over a real SQLite store with two tenants and a fixed clock.
type revFixture struct {
	c      *control.Control
	st     *faultyStore
	rv     *control.SVIDRevocations
	sa     context.Context // SUPER_ADMIN
	now    time.Time
	ta, tb tenant.Tenant
}

func newRevFixture(t *testing.T) *revFixture {
	t.Helper()
	f := &revFixture{now: time.Date(2026, 5, 1, 12, 0, 0, 123456789, time.UTC)}
	f.c, f.st, f.sa = setupWith(t, control.Options{Now: func() time.Time { return f.now }})
	f.rv = f.c.SVIDRevocations(f.st, revTD, revTTL)
	var err error
	if f.ta, err = f.c.CreateTenant(f.sa, tenant.CreateInput{Name: "acme"}); err != nil {
		t.Fatal(err)
	}
	if f.tb, err = f.c.CreateTenant(f.sa, tenant.CreateInput{Name: "globex"}); err != nil {
		t.Fatal(err)
	}
	return f
}

// as returns a context of a principal of tenantID with roles.
func (f *revFixture) as(tenantID string, roles ...string) context.Context {
	ctx := principal.NewContext(f.sa, principal.Principal{Subject: "usr_" + strings.ToLower(strings.Join(roles, "_")), Tenant: tenantID, Roles: roles})
	return control.WithRequest(ctx, control.Request{IP: "192.0.2.9", RequestID: "req_rev"})
}

func agentIDOf(tenantID, agent string) string {
	return "spiffe://nops.test/tenant/" + tenantID + "/agent/" + agent
}

func TestRevokeSVIDRecordsAndAudits(t *testing.T) {
	f := newRevFixture(t)
	wantExpiry := f.now.Truncate(time.Microsecond).Add(revTTL + identity.Backdate)
	for _, tt := range []struct {
		name       string
		ctx        context.Context
		in         control.RevokeInput
		wantTenant string // of the record, and the tree of its audit record
		wantSerial string
	}{
		{"super admin, an agent's ID", f.sa, control.RevokeInput{SPIFFEID: agentIDOf(f.ta.ID, "agt_1"), Reason: "stolen laptop"}, f.ta.ID, ""},
		{"super admin, a kernel's ID", f.sa, control.RevokeInput{SPIFFEID: "spiffe://nops.test/kernel/node-1"}, "", ""},
		{"super admin, a serial (normalised)", f.sa, control.RevokeInput{Serial: "0x00AbC1"}, "", "abc1"},
		{"tenant admin, its agent", f.as(f.tb.ID, user.RoleAdmin), control.RevokeInput{SPIFFEID: agentIDOf(f.tb.ID, "agt_2")}, f.tb.ID, ""},
		{"tenant admin, another workload path of its tenant", f.as(f.tb.ID, user.RoleAdmin), control.RevokeInput{SPIFFEID: "spiffe://nops.test/tenant/" + f.tb.ID + "/job/nightly"}, f.tb.ID, ""},
		{"super admin naming the tenant", f.sa, control.RevokeInput{SPIFFEID: agentIDOf(f.ta.ID, "agt_3"), Tenant: f.ta.ID}, f.ta.ID, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tree := audit.TreeFor(tt.wantTenant)
			before := treeSize(t, f.st, tree)
			rec, err := f.rv.Revoke(tt.ctx, tt.in)
			if err != nil {
				t.Fatalf("Revoke: %v", err)
			}
			p, _ := principal.FromContext(tt.ctx)
			if !identity.ValidRevocationID(rec.ID) || rec.TenantID != tt.wantTenant || rec.Serial != tt.wantSerial ||
				rec.SPIFFEID != tt.in.SPIFFEID || rec.Reason != tt.in.Reason || rec.Actor != p.Subject ||
				!rec.RevokedAt.Equal(f.now.Truncate(time.Microsecond)) || !rec.ExpiresAt.Equal(wantExpiry) {
				t.Fatalf("record %+v", rec)
			}
			stored, err := f.st.ListRevocations(t.Context(), identity.RevocationFilter{AllTenants: true, Limit: 100})
			if err != nil || stored[len(stored)-1] != rec {
				t.Fatalf("stored %+v, %v; want last %+v", stored, err, rec)
			}
			if n := treeSize(t, f.st, tree); n != before+1 {
				t.Fatalf("tree %s grew from %d to %d, want one record", tree, before, n)
			}
			a := lastRecord(t, f.st, tree)
			if a.Action != identity.AuditActionRevoke || a.Resource != "identity/revocations/"+rec.ID || !a.Decision.Allowed ||
				a.Actor.Principal != p.Subject || !strings.HasPrefix(a.Decision.Reason, "allowed: ") ||
				!strings.Contains(a.Decision.Reason, rec.Serial+rec.SPIFFEID) || !strings.Contains(a.Decision.Reason, tt.in.Reason) {
				t.Fatalf("audit record %+v", a)
			}
		})
	}
}

func TestRevokeSVIDDenialsAreAudited(t *testing.T) {
	f := newRevFixture(t)
	for _, tt := range []struct {
		name     string
		ctx      context.Context
		in       control.RevokeInput
		tree     string // where the denial is recorded
		wantText string // in the problem and the audit reason
	}{
		{"tenant admin, another tenant's agent", f.as(f.ta.ID, user.RoleAdmin), control.RevokeInput{SPIFFEID: agentIDOf(f.tb.ID, "agt_1")}, f.ta.ID, "of that tenant only"},
		{"tenant admin, a kernel's ID", f.as(f.ta.ID, user.RoleAdmin), control.RevokeInput{SPIFFEID: "spiffe://nops.test/kernel/n1"}, f.ta.ID, "of that tenant only"},
		{"tenant admin, a serial", f.as(f.ta.ID, user.RoleAdmin), control.RevokeInput{Serial: "abc"}, f.ta.ID, "SUPER_ADMIN"},
		{"tenant operator", f.as(f.ta.ID, user.RoleOperator), control.RevokeInput{SPIFFEID: agentIDOf(f.ta.ID, "agt_1")}, f.ta.ID, "only an ADMIN"},
		{"a principal above tenants without SUPER_ADMIN", f.as("", user.RoleAdmin), control.RevokeInput{Serial: "abc"}, "", "only an ADMIN"},
		{"super admin naming a tenant, another's ID", f.sa, control.RevokeInput{SPIFFEID: agentIDOf(f.tb.ID, "agt_1"), Tenant: f.ta.ID}, f.ta.ID, "of that tenant only"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tree := audit.TreeFor(tt.tree)
			before := treeSize(t, f.st, tree)
			_, err := f.rv.Revoke(tt.ctx, tt.in)
			if errs.CodeOf(err) != errs.Forbidden || !strings.Contains(err.Error(), tt.wantText) {
				t.Fatalf("Revoke = %v, want 403 saying %q", err, tt.wantText)
			}
			if n := treeSize(t, f.st, tree); n != before+1 {
				t.Fatalf("tree %s grew from %d to %d, want one denial", tree, before, n)
			}
			a := lastRecord(t, f.st, tree)
			if a.Action != identity.AuditActionRevoke || a.Decision.Allowed || a.Resource != "identity/revocations" ||
				!strings.HasPrefix(a.Decision.Reason, "denied: ") || !strings.Contains(a.Decision.Reason, tt.wantText) ||
				!strings.Contains(a.Decision.Reason, tt.in.Serial+tt.in.SPIFFEID) {
				t.Fatalf("denial record %+v", a)
			}
		})
	}
	if rs, err := f.st.Revocations(t.Context(), time.Time{}); err != nil || len(rs) != 0 {
		t.Fatalf("refused revocations were stored: %v, %v", rs, err)
	}
}

func TestRevokeSVIDValidation(t *testing.T) {
	f := newRevFixture(t)
	for _, tt := range []struct {
		name  string
		ctx   context.Context
		in    control.RevokeInput
		code  errs.Code
		field string
	}{
		{"both", f.sa, control.RevokeInput{Serial: "ab", SPIFFEID: agentIDOf(f.ta.ID, "a")}, errs.Invalid, "body.serial+body.spiffe_id"},
		{"neither", f.sa, control.RevokeInput{Reason: "x"}, errs.Invalid, "body.serial+body.spiffe_id"},
		{"serial not hex", f.sa, control.RevokeInput{Serial: "12:ab"}, errs.Invalid, "body.serial"},
		{"serial zero", f.sa, control.RevokeInput{Serial: "0x000"}, errs.Invalid, "body.serial"},
		{"serial negative", f.sa, control.RevokeInput{Serial: "-ab"}, errs.Invalid, "body.serial"},
		{"serial too long", f.sa, control.RevokeInput{Serial: strings.Repeat("f", 41)}, errs.Invalid, "body.serial"},
		{"not a SPIFFE ID", f.sa, control.RevokeInput{SPIFFEID: "https://nops.test/tenant/x"}, errs.Invalid, "body.spiffe_id"},
		{"foreign trust domain", f.sa, control.RevokeInput{SPIFFEID: "spiffe://evil.test/tenant/" + f.ta.ID + "/agent/a"}, errs.Invalid, "body.spiffe_id"},
		{"the trust domain itself", f.sa, control.RevokeInput{SPIFFEID: "spiffe://nops.test"}, errs.Invalid, "body.spiffe_id"},
		{"reason with control characters", f.sa, control.RevokeInput{Serial: "ab", Reason: "a\nb"}, errs.Invalid, "body.reason"},
		{"reason too long", f.sa, control.RevokeInput{Serial: "ab", Reason: strings.Repeat("r", identity.MaxRevocationReason+1)}, errs.Invalid, "body.reason"},
		{"tenant admin naming another tenant", f.as(f.ta.ID, user.RoleAdmin), control.RevokeInput{SPIFFEID: agentIDOf(f.tb.ID, "a"), Tenant: f.tb.ID}, errs.NotFound, ""},
		{"super admin naming an unknown tenant", f.sa, control.RevokeInput{Serial: "ab", Tenant: "ten_01hzzzzzzzzzzzzzzzzzzzzz"}, errs.NotFound, ""},
		{"no principal", control.WithRequest(t.Context(), control.Request{RequestID: "r"}), control.RevokeInput{Serial: "ab"}, errs.Unauthenticated, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.rv.Revoke(tt.ctx, tt.in)
			e := errs.As(err)
			var fields []string
			if e != nil {
				for _, f := range e.Fields {
					fields = append(fields, f.Name)
				}
			}
			if e == nil || e.Code != tt.code || strings.Join(fields, "+") != tt.field {
				t.Fatalf("Revoke = %#v, want %s naming %q", err, tt.code, tt.field)
			}
		})
	}
	if rs, err := f.st.Revocations(t.Context(), time.Time{}); err != nil || len(rs) != 0 {
		t.Fatalf("invalid revocations were stored: %v, %v", rs, err)
	}
}

// TestRevokeSVIDOfAnIntermediate: a serial of the CA's own intermediate is remembered until the
// intermediate expires, not just one SVID lifetime.
func TestRevokeSVIDOfAnIntermediate(t *testing.T) {
	f := newRevFixture(t)
	box, err := sealbox.LoadOrCreateFile(t.TempDir() + "/kek.json")
	if err != nil {
		t.Fatal(err)
	}
	ca, err := identity.LoadOrCreate(t.Context(), f.st, box, identity.Config{TrustDomain: revTD.Name(), SVIDTTL: revTTL})
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	id, err := identity.AgentID(revTD, f.ta.ID, "agt_x")
	if err != nil {
		t.Fatal(err)
	}
	svid, err := ca.Sign(csr, id, 0)
	if err != nil {
		t.Fatal(err)
	}
	inter := svid.Certificates[1]
	rec, err := f.rv.Revoke(f.sa, control.RevokeInput{Serial: identity.SerialString(inter.SerialNumber)})
	if err != nil {
		t.Fatal(err)
	}
	if rec.ExpiresAt.Before(inter.NotAfter) {
		t.Fatalf("an intermediate's revocation expires %v, before the intermediate (%v)", rec.ExpiresAt, inter.NotAfter)
	}
	// A leaf's serial is unknown to the kernel: one SVID lifetime.
	rec, err = f.rv.Revoke(f.sa, control.RevokeInput{Serial: svid.Serial})
	if err != nil {
		t.Fatal(err)
	}
	if want := f.now.Truncate(time.Microsecond).Add(revTTL + identity.Backdate); !rec.ExpiresAt.Equal(want) {
		t.Fatalf("a leaf's revocation expires %v, want %v", rec.ExpiresAt, want)
	}
}

func TestListSVIDRevocations(t *testing.T) {
	f := newRevFixture(t)
	var ids []string
	revoke := func(ctx context.Context, in control.RevokeInput) {
		t.Helper()
		rec, err := f.rv.Revoke(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, rec.ID)
		f.now = f.now.Add(time.Second)
	}
	revoke(f.sa, control.RevokeInput{SPIFFEID: agentIDOf(f.ta.ID, "a1")})                          // 0
	revoke(f.sa, control.RevokeInput{SPIFFEID: agentIDOf(f.tb.ID, "b1")})                          // 1
	revoke(f.sa, control.RevokeInput{Serial: "ab"})                                                // 2
	revoke(f.as(f.ta.ID, user.RoleAdmin), control.RevokeInput{SPIFFEID: agentIDOf(f.ta.ID, "a2")}) // 3

	list := func(ctx context.Context, in control.RevocationListInput) ([]string, string) {
		t.Helper()
		page, err := f.rv.List(ctx, in)
		if err != nil {
			t.Fatalf("List(%+v): %v", in, err)
		}
		var got []string
		for _, r := range page.Revocations {
			got = append(got, r.ID)
		}
		return got, page.NextCursor
	}
	eq := func(what string, got []string, want ...string) {
		t.Helper()
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("%s = %v, want %v", what, got, want)
		}
	}
	got, _ := list(f.sa, control.RevocationListInput{})
	eq("super admin", got, ids...)
	got, _ = list(f.sa, control.RevocationListInput{Tenant: f.tb.ID})
	eq("super admin naming a tenant", got, ids[1])
	got, _ = list(f.as(f.ta.ID, user.RoleOperator), control.RevocationListInput{})
	eq("tenant principal", got, ids[0], ids[3])

	// Pages of one.
	var all []string
	cursor := ""
	for range 10 {
		got, next := list(f.as(f.ta.ID, user.RoleAdmin), control.RevocationListInput{Limit: 1, Cursor: cursor})
		all = append(all, got...)
		if next == "" {
			break
		}
		cursor = next
	}
	eq("paged", all, ids[0], ids[3])

	if _, err := f.rv.List(f.as(f.ta.ID, user.RoleAdmin), control.RevocationListInput{Tenant: f.tb.ID}); errs.CodeOf(err) != errs.NotFound {
		t.Errorf("tenant naming another: %v, want 404", err)
	}
	for _, bad := range []control.RevocationListInput{{Cursor: "not-a-cursor"}, {Limit: control.MaxRevocationListLimit + 1}} {
		if _, err := f.rv.List(f.sa, bad); errs.CodeOf(err) != errs.Invalid {
			t.Errorf("List(%+v) = %v, want 400", bad, err)
		}
	}

	// Once expired, entries leave the list (and the next revocation purges them).
	f.now = f.now.Add(revTTL + identity.Backdate - 2500*time.Millisecond) // past 0 and 1, not 2 and 3
	got, _ = list(f.sa, control.RevocationListInput{})
	eq("after the first two expired", got, ids[2], ids[3])
}
