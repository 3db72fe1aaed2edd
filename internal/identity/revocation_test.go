package identity_test

import (
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/identity"
)

var revTD = spiffeid.RequireTrustDomainFromString("nops.test")

// checkField fails unless err is an errs.Invalid naming exactly field.
func checkField(t *testing.T, err error, field string) {
	t.Helper()
	e := errs.As(err)
	if e == nil || e.Code != errs.Invalid || len(e.Fields) != 1 || e.Fields[0].Name != field {
		t.Fatalf("error %#v, want an invalid input naming %s", err, field)
	}
}

func TestNormalizeSerial(t *testing.T) {
	for in, want := range map[string]string{
		"abc": "abc", "ABC": "abc", "0xAbC": "abc", "0X00ab": "ab", "000001": "1",
		strings.Repeat("f", 40):              strings.Repeat("f", 40), // 20 octets, RFC 5280's largest
		"0x" + strings.Repeat("0", 20) + "1": "1",
	} {
		if got, err := identity.NormalizeSerial(in); err != nil || got != want {
			t.Errorf("NormalizeSerial(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "0x", "0", "0x000", "-1", "+1", "ab:cd", "ab cd", "ab_cd", "0xg1", "xyz",
		strings.Repeat("f", 41), strings.Repeat("0", identity.MaxSerialText) + "1", "１２"} {
		_, err := identity.NormalizeSerial(bad)
		checkField(t, err, "body.serial")
	}
}

func TestParseRevokedID(t *testing.T) {
	for _, tt := range []struct{ in, tenant string }{
		{"spiffe://nops.test/tenant/ten_a/agent/agt_1", "ten_a"},
		{"spiffe://nops.test/tenant/ten_a", "ten_a"},
		{"spiffe://nops.test/tenant/ten_a/job/x/y", "ten_a"},
		{"spiffe://nops.test/kernel/node-1", ""},
		{"spiffe://nops.test/other/path", ""},
		{"spiffe://nops.test/tenant", ""},
	} {
		id, tenant, err := identity.ParseRevokedID(revTD, tt.in)
		if err != nil || id.String() != tt.in || tenant != tt.tenant {
			t.Errorf("ParseRevokedID(%q) = %v, %q, %v; want tenant %q", tt.in, id, tenant, err, tt.tenant)
		}
	}
	for _, bad := range []string{"", "nops.test/tenant/a", "https://nops.test/a", "spiffe://nops.test", "spiffe://nops.test/",
		"spiffe://other.test/tenant/ten_a/agent/a", "spiffe://NOPS.test/a", "spiffe://nops.test/a/../b", "spiffe://nops.test/a?q=1",
		"spiffe://nops.test/" + strings.Repeat("a", identity.MaxSPIFFEIDText)} {
		_, _, err := identity.ParseRevokedID(revTD, bad)
		checkField(t, err, "body.spiffe_id")
	}
}

func TestCheckRevocationReason(t *testing.T) {
	for _, ok := range []string{"", "key leaked on a laptop", "clé compromise ✓", strings.Repeat("r", identity.MaxRevocationReason)} {
		if err := identity.CheckRevocationReason(ok); err != nil {
			t.Errorf("CheckRevocationReason(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"a\nb", "a\x00", "\u0085", "\xff", strings.Repeat("r", identity.MaxRevocationReason+1)} {
		checkField(t, identity.CheckRevocationReason(bad), "body.reason")
	}
}

func TestRevocationRecord(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	id, err := identity.NewRevocationID(at)
	if err != nil {
		t.Fatal(err)
	}
	if !identity.ValidRevocationID(id) {
		t.Fatalf("NewRevocationID = %q, not valid", id)
	}
	for _, bad := range []string{"", "rev_", "rev_1", strings.ToUpper(id), "key_" + strings.TrimPrefix(id, "rev_"), id + "0"} {
		if identity.ValidRevocationID(bad) {
			t.Errorf("ValidRevocationID(%q) = true", bad)
		}
	}
	good := identity.RevocationRecord{ID: id, SPIFFEID: "spiffe://nops.test/tenant/ten_a/agent/a", TenantID: "ten_a",
		RevokedAt: at, ExpiresAt: at.Add(time.Hour)}
	if err := good.Check(); err != nil {
		t.Fatalf("Check(%+v) = %v", good, err)
	}
	r, err := good.Revocation()
	if err != nil || r.ID.String() != good.SPIFFEID || r.Serial != "" || !r.RevokedAt.Equal(at) || !r.Expires.Equal(good.ExpiresAt) {
		t.Fatalf("Revocation() = %+v, %v", r, err)
	}
	ser := good
	ser.SPIFFEID, ser.TenantID, ser.Serial = "", "", "ab"
	if err := ser.Check(); err != nil {
		t.Fatalf("Check(%+v) = %v", ser, err)
	}
	if r, err := ser.Revocation(); err != nil || r.Serial != "ab" || !r.ID.IsZero() {
		t.Fatalf("Revocation() = %+v, %v", r, err)
	}
	for name, mod := range map[string]func(*identity.RevocationRecord){
		"both":            func(r *identity.RevocationRecord) { r.Serial = "ab" },
		"neither":         func(r *identity.RevocationRecord) { r.SPIFFEID = "" },
		"bad id":          func(r *identity.RevocationRecord) { r.ID = "rev_x" },
		"no revoked_at":   func(r *identity.RevocationRecord) { r.RevokedAt = time.Time{} },
		"bad SPIFFE ID":   func(r *identity.RevocationRecord) { r.SPIFFEID = "spiffe://x/../y" },
		"serial unformed": func(r *identity.RevocationRecord) { r.SPIFFEID, r.Serial = "", "0AB" },
	} {
		r := good
		mod(&r)
		if err := r.Check(); err == nil {
			t.Errorf("%s: Check(%+v) = nil", name, r)
		}
	}
}

// FuzzRevocationTarget feeds what a client sends as body.serial and body.spiffe_id through the
// parsers. Refusals must be invalid inputs naming the field; an accepted serial is in the form the
// mTLS listener matches (the lower-case hex of the same positive number) and normalising it again
// changes nothing; an accepted SPIFFE ID is of the trust domain and parses back to itself.
func FuzzRevocationTarget(f *testing.F) {
	for _, s := range []string{"abc", "0xABC", "000", "-1", "ab:cd", "spiffe://nops.test/tenant/ten_a/agent/agt_1",
		"spiffe://nops.test/kernel/n", "spiffe://other.test/x", "spiffe://nops.test", "spiffe://nops.test/a/./b", "%00", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		if s, err := identity.NormalizeSerial(text); err != nil {
			checkField(t, err, "body.serial")
		} else {
			n, ok := new(big.Int).SetString(strings.TrimPrefix(strings.ToLower(text), "0x"), 16)
			if !ok || n.Sign() <= 0 || n.Text(16) != s || n.BitLen() > 160 {
				t.Fatalf("NormalizeSerial(%q) = %q, not the hex of a positive 20-octet number", text, s)
			}
			if again, err := identity.NormalizeSerial(s); err != nil || again != s {
				t.Fatalf("NormalizeSerial(%q) = %q, %v; not stable", s, again, err)
			}
		}
		id, tenant, err := identity.ParseRevokedID(revTD, text)
		if err != nil {
			checkField(t, err, "body.spiffe_id")
			return
		}
		if !id.MemberOf(revTD) || id.Path() == "" {
			t.Fatalf("ParseRevokedID(%q) accepted %v", text, id)
		}
		again, tenant2, err := identity.ParseRevokedID(revTD, id.String())
		if err != nil || again != id || tenant2 != tenant {
			t.Fatalf("ParseRevokedID(%q) = %v, %q; again %v, %q, %v", text, id, tenant, again, tenant2, err)
		}
		if tenant != "" && !strings.HasPrefix(id.Path(), "/tenant/"+tenant) {
			t.Fatalf("ParseRevokedID(%q): tenant %q not in the path", text, tenant)
		}
	})
}
