package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/identity"
	"github.com/nops-kernel/nops/internal/mtls"
	"github.com/nops-kernel/nops/internal/pagecursor"
)

// RevocationStore is what RunRevocations needs: the store of SVID revocations (which includes
// mtls.RevocationStore and InTx).
type RevocationStore interface {
	identity.RevocationStore
}

// RunRevocations runs the identity.RevocationStore suite. open must return a fresh store with
// every migration applied, on a database no other test uses, and close it through t.Cleanup.
func RunRevocations(t *testing.T, open func(t *testing.T) RevocationStore) {
	t.Run("round trip", func(t *testing.T) { t.Parallel(); testRevocationRoundTrip(t, open) })
	t.Run("read since a cursor", func(t *testing.T) { t.Parallel(); testRevocationsSince(t, open) })
	t.Run("list filters and pages", func(t *testing.T) { t.Parallel(); testRevocationList(t, open) })
	t.Run("expired entries are purged", func(t *testing.T) { t.Parallel(); testRevocationPurge(t, open) })
	t.Run("malformed records are refused", func(t *testing.T) { t.Parallel(); testRevocationCheck(t, open) })
	t.Run("transactions", func(t *testing.T) { t.Parallel(); testRevocationTx(t, open) })
}

// revocationID returns a valid, distinct revocation ID; IDs made for the same instant sort in
// the order they were made.
func revocationID(t *testing.T, at time.Time) string {
	t.Helper()
	id, err := identity.NewRevocationID(at)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func serialRev(t *testing.T, serial string, at time.Time) identity.RevocationRecord {
	return identity.RevocationRecord{ID: revocationID(t, at), Serial: serial, Reason: "key compromised",
		RevokedAt: at, ExpiresAt: at.Add(time.Hour), Actor: "usr_admin"}
}

func idRev(t *testing.T, tenantID, agent string, at time.Time) identity.RevocationRecord {
	return identity.RevocationRecord{ID: revocationID(t, at), SPIFFEID: "spiffe://nops.test/tenant/" + tenantID + "/agent/" + agent,
		TenantID: tenantID, RevokedAt: at, ExpiresAt: at.Add(time.Hour), Actor: "usr_" + tenantID}
}

func storedRev(r identity.RevocationRecord) identity.RevocationRecord {
	r.RevokedAt, r.ExpiresAt = stored(r.RevokedAt), stored(r.ExpiresAt)
	return r
}

func addRevs(t *testing.T, s RevocationStore, recs ...identity.RevocationRecord) {
	t.Helper()
	for _, r := range recs {
		if err := s.AddRevocation(t.Context(), r); err != nil {
			t.Fatalf("AddRevocation(%s): %v", r.ID, err)
		}
	}
}

// enforced is an mtls.Revocation in comparable form (spiffeid.ID has unexported fields).
type enforced struct {
	Serial, ID         string
	RevokedAt, Expires time.Time
}

func enforcedOf(rs []mtls.Revocation) []enforced {
	var out []enforced
	for _, r := range rs {
		e := enforced{Serial: r.Serial, RevokedAt: r.RevokedAt, Expires: r.Expires}
		if !r.ID.IsZero() {
			e.ID = r.ID.String()
		}
		out = append(out, e)
	}
	return out
}

func enforcedRecs(recs ...identity.RevocationRecord) []enforced {
	var out []enforced
	for _, r := range recs {
		r = storedRev(r)
		out = append(out, enforced{Serial: r.Serial, ID: r.SPIFFEID, RevokedAt: r.RevokedAt, Expires: r.ExpiresAt})
	}
	return out
}

func readRevocations(t *testing.T, s RevocationStore, since time.Time) []enforced {
	t.Helper()
	rs, err := s.Revocations(t.Context(), since)
	if err != nil {
		t.Fatalf("Revocations(%v): %v", since, err)
	}
	for _, r := range rs {
		checkUTC(t, "RevokedAt", r.RevokedAt)
		checkUTC(t, "Expires", r.Expires)
	}
	return enforcedOf(rs)
}

func listRevs(t *testing.T, s RevocationStore, f identity.RevocationFilter) []identity.RevocationRecord {
	t.Helper()
	if f.Limit == 0 {
		f.Limit = 100
	}
	recs, err := s.ListRevocations(t.Context(), f)
	if err != nil {
		t.Fatalf("ListRevocations(%+v): %v", f, err)
	}
	return recs
}

func testRevocationRoundTrip(t *testing.T, open func(t *testing.T) RevocationStore) {
	s := open(t)
	if got := readRevocations(t, s, time.Time{}); len(got) != 0 {
		t.Fatalf("Revocations of an empty store = %v", got)
	}
	ser := serialRev(t, "9f3c0a", base)
	id := idRev(t, "ten_a", "agt_1", base.Add(time.Second))
	id.Reason = "décommissionné"
	addRevs(t, s, ser, id)
	if diff := cmp.Diff(enforcedRecs(ser, id), readRevocations(t, s, time.Time{})); diff != "" {
		t.Errorf("Revocations (-want +got):\n%s", diff)
	}
	got := listRevs(t, s, identity.RevocationFilter{AllTenants: true})
	if diff := cmp.Diff([]identity.RevocationRecord{storedRev(ser), storedRev(id)}, got); diff != "" {
		t.Errorf("ListRevocations (-want +got):\n%s", diff)
	}
	for _, r := range got {
		checkUTC(t, "RevokedAt", r.RevokedAt)
		checkUTC(t, "ExpiresAt", r.ExpiresAt)
	}
	// Revoking the same serial again is a second entry, not an error.
	again := serialRev(t, "9f3c0a", base.Add(2*time.Second))
	addRevs(t, s, again)
	if got := readRevocations(t, s, time.Time{}); len(got) != 3 {
		t.Errorf("after revoking a serial twice, Revocations = %v, want 3 entries", got)
	}
}

func testRevocationsSince(t *testing.T, open func(t *testing.T) RevocationStore) {
	s := open(t)
	a := serialRev(t, "a1", base)
	b := idRev(t, "ten_a", "agt_b", base.Add(time.Minute))
	c := idRev(t, "ten_b", "agt_c", base.Add(2*time.Minute))
	addRevs(t, s, c, a, b) // stored out of order: reads are in RevokedAt order
	for _, tt := range []struct {
		name  string
		since time.Time
		want  []enforced
	}{
		{"zero: all", time.Time{}, enforcedRecs(a, b, c)},
		{"at b: b included", stored(b.RevokedAt), enforcedRecs(b, c)},
		{"just after b", stored(b.RevokedAt).Add(time.Microsecond), enforcedRecs(c)},
		{"after all", c.RevokedAt.Add(time.Hour), nil},
	} {
		if diff := cmp.Diff(tt.want, readRevocations(t, s, tt.since)); diff != "" {
			t.Errorf("%s: Revocations (-want +got):\n%s", tt.name, diff)
		}
	}
}

func testRevocationList(t *testing.T, open func(t *testing.T) RevocationStore) {
	s := open(t)
	// Two entries share one instant: the ID breaks the tie, in pages as in the order.
	a1 := idRev(t, "ten_a", "agt_1", base)
	a2 := idRev(t, "ten_a", "agt_2", base)
	if a2.ID < a1.ID {
		a1, a2 = a2, a1
	}
	a3 := idRev(t, "ten_a", "agt_3", base.Add(time.Minute))
	a3.ExpiresAt = base.Add(10 * time.Hour)
	b := idRev(t, "ten_b", "agt_1", base.Add(30*time.Second))
	k := serialRev(t, "ff", base.Add(45*time.Second))
	addRevs(t, s, a1, a2, a3, b, k)
	for _, tt := range []struct {
		name string
		f    identity.RevocationFilter
		want []identity.RevocationRecord
	}{
		{"all tenants", identity.RevocationFilter{AllTenants: true}, []identity.RevocationRecord{a1, a2, b, k, a3}},
		{"one tenant", identity.RevocationFilter{TenantID: "ten_a"}, []identity.RevocationRecord{a1, a2, a3}},
		{"another tenant", identity.RevocationFilter{TenantID: "ten_b"}, []identity.RevocationRecord{b}},
		{"no tenant: serials and kernel IDs", identity.RevocationFilter{}, []identity.RevocationRecord{k}},
		{"unknown tenant", identity.RevocationFilter{TenantID: "ten_nope"}, nil},
		{"in force later", identity.RevocationFilter{AllTenants: true, ExpiresAfter: base.Add(2 * time.Hour)}, []identity.RevocationRecord{a3}},
		{"limit", identity.RevocationFilter{AllTenants: true, Limit: 2}, []identity.RevocationRecord{a1, a2}},
		{"after the first of a tie", identity.RevocationFilter{TenantID: "ten_a",
			After: pagecursor.Cursor{CreatedAt: stored(a1.RevokedAt), ID: a1.ID}}, []identity.RevocationRecord{a2, a3}},
		{"after the second of a tie", identity.RevocationFilter{AllTenants: true, Limit: 2,
			After: pagecursor.Cursor{CreatedAt: stored(a2.RevokedAt), ID: a2.ID}}, []identity.RevocationRecord{b, k}},
		{"after the last", identity.RevocationFilter{AllTenants: true,
			After: pagecursor.Cursor{CreatedAt: stored(a3.RevokedAt), ID: a3.ID}}, nil},
	} {
		var want []identity.RevocationRecord
		for _, r := range tt.want {
			want = append(want, storedRev(r))
		}
		if diff := cmp.Diff(want, listRevs(t, s, tt.f)); diff != "" {
			t.Errorf("%s: ListRevocations (-want +got):\n%s", tt.name, diff)
		}
	}
}

func testRevocationPurge(t *testing.T, open func(t *testing.T) RevocationStore) {
	s := open(t)
	old := idRev(t, "ten_a", "agt_old", base) // expires base+1h
	// Revoked before edge below, so the order of the list does not rest on the records' ids
	// (records revoked at one instant are ordered by id, which is random).
	live := idRev(t, "ten_a", "agt_live", base.Add(45*time.Minute)) // expires base+1h45m
	addRevs(t, s, old, live)
	// Recorded exactly when old expires: old can still match at that instant and is kept.
	edge := serialRev(t, "e1", base.Add(time.Hour))
	addRevs(t, s, edge)
	if got := readRevocations(t, s, time.Time{}); len(got) != 3 {
		t.Fatalf("before anything expired, Revocations = %v, want 3", got)
	}
	next := serialRev(t, "e2", base.Add(90*time.Minute))
	addRevs(t, s, next)
	if diff := cmp.Diff(enforcedRecs(live, edge, next), readRevocations(t, s, time.Time{})); diff != "" {
		t.Errorf("after a revocation past old's expiry (-want +got):\n%s", diff)
	}
}

func testRevocationCheck(t *testing.T, open func(t *testing.T) RevocationStore) {
	s := open(t)
	good := serialRev(t, "abc", base)
	for _, tt := range []struct {
		name string
		mod  func(r *identity.RevocationRecord)
	}{
		{"both serial and ID", func(r *identity.RevocationRecord) { r.SPIFFEID = "spiffe://nops.test/kernel/n1" }},
		{"neither", func(r *identity.RevocationRecord) { r.Serial = "" }},
		{"serial not normalised", func(r *identity.RevocationRecord) { r.Serial = "0ABC" }},
		{"serial not hex", func(r *identity.RevocationRecord) { r.Serial = "xyz" }},
		{"malformed SPIFFE ID", func(r *identity.RevocationRecord) { r.Serial, r.SPIFFEID = "", "https://nops.test/x" }},
		{"malformed ID", func(r *identity.RevocationRecord) { r.ID = "rev_1" }},
		{"no expiry", func(r *identity.RevocationRecord) { r.ExpiresAt = time.Time{} }},
	} {
		r := good
		tt.mod(&r)
		if err := s.AddRevocation(t.Context(), r); err == nil {
			t.Errorf("%s: AddRevocation accepted %+v", tt.name, r)
		}
	}
	if got := readRevocations(t, s, time.Time{}); len(got) != 0 {
		t.Errorf("refused records were stored: %v", got)
	}
}

func testRevocationTx(t *testing.T, open func(t *testing.T) RevocationStore) {
	s := open(t)
	boom := errors.New("boom")
	err := s.InTx(t.Context(), func(ctx context.Context) error {
		if err := s.AddRevocation(ctx, serialRev(t, "dead", base)); err != nil {
			return err
		}
		// The transaction sees its own write.
		if rs, err := s.Revocations(ctx, time.Time{}); err != nil || len(rs) != 1 {
			t.Errorf("inside the transaction, Revocations = %v, %v; want 1", rs, err)
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("InTx = %v, want boom", err)
	}
	if got := readRevocations(t, s, time.Time{}); len(got) != 0 {
		t.Errorf("a rolled-back revocation is visible: %v", got)
	}
}
