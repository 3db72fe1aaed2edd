package httpapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/nops-kernel/nops/internal/identity"
	"github.com/nops-kernel/nops/internal/mtls"
	"github.com/nops-kernel/nops/internal/sealbox"
	"github.com/nops-kernel/nops/internal/store/sqlite"
)

// fakeRevoker records what the handler applies on "this replica's listener".
type fakeRevoker struct {
	mu   sync.Mutex
	got  []mtls.Revocation
	fail error
}

func (f *fakeRevoker) Revoke(_ context.Context, rs ...mtls.Revocation) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.got = append(f.got, rs...)
	return f.fail
}

func (f *fakeRevoker) applied() []mtls.Revocation {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]mtls.Revocation(nil), f.got...)
}

// revocationWorld is the managed world (tenants A and B, keys of each role in A, an ADMIN of B, a
// SUPER_ADMIN token) with a built-in CA, the revocation store, and a fake listener.
type revocationWorld struct {
	*eventsWorld
	revoker *fakeRevoker
	logs    *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newRevocationWorld(t *testing.T, mutate func(*Deps)) *revocationWorld {
	t.Helper()
	rw := &revocationWorld{revoker: &fakeRevoker{}, logs: &syncBuffer{}}
	rw.eventsWorld = newEventsWorld(t, func(d *Deps) {
		st := d.AuditLog.(*sqlite.Store)
		secret := make([]byte, sealbox.KeyLen)
		if _, err := rand.Read(secret); err != nil {
			t.Fatal(err)
		}
		box, err := sealbox.New(sealbox.Key{Version: "k1", Secret: secret})
		if err != nil {
			t.Fatal(err)
		}
		ca, err := identity.LoadOrCreate(t.Context(), st, box, identity.Config{TrustDomain: identityTD})
		if err != nil {
			t.Fatal(err)
		}
		d.Identity, d.Revocations, d.Revoker = ca, st, rw.revoker
		d.Logger = slog.New(slog.NewJSONHandler(rw.logs, nil))
		if mutate != nil {
			mutate(d)
		}
	})
	return rw
}

func TestRevokeSVIDThroughTheAPI(t *testing.T) {
	w := newRevocationWorld(t, nil)
	id := agentSPIFFE(w.a, "agt_01jz0000000000000000000000")
	_, rec := w.must(201, "POST", "/v1/identity/revocations", w.keys["ADMIN"], map[string]any{"spiffe_id": id, "reason": "laptop stolen"})
	if rec["spiffe_id"] != id || rec["tenant_id"] != w.a || rec["reason"] != "laptop stolen" || rec["serial"] != nil ||
		!identity.ValidRevocationID(rec["id"].(string)) || rec["actor"] == "" {
		t.Fatalf("revocation %v", rec)
	}
	// Applied on this replica's listener at once, exactly as stored.
	if got := w.revoker.applied(); len(got) != 1 || got[0].ID.String() != id || got[0].Serial != "" || got[0].RevokedAt.IsZero() || got[0].Expires.IsZero() {
		t.Fatalf("applied on the listener: %+v", got)
	}
	// A SUPER_ADMIN revokes a serial (normalised) and a kernel's ID.
	_, ser := w.must(201, "POST", "/v1/identity/revocations", w.admin, map[string]any{"serial": "0x00ABCDEF"})
	if ser["serial"] != "abcdef" || ser["tenant_id"] != nil || ser["spiffe_id"] != nil {
		t.Fatalf("serial revocation %v", ser)
	}
	_, kern := w.must(201, "POST", "/v1/identity/revocations", w.admin, map[string]any{"spiffe_id": "spiffe://" + identityTD + "/kernel/node-7"})
	_, other := w.must(201, "POST", "/v1/identity/revocations", w.otherAdmin, map[string]any{"spiffe_id": agentSPIFFE(w.b, "agt_x")})

	// Each tenant sees its own; the SUPER_ADMIN every entry, or one tenant's.
	_, list := w.must(200, "GET", "/v1/identity/revocations", w.keys["ADMIN"], nil)
	if got := itemIDs(list, "id"); len(got) != 1 || got[0] != rec["id"] {
		t.Fatalf("tenant A lists %v", got)
	}
	_, list = w.must(200, "GET", "/v1/identity/revocations", w.keys["OPERATOR"], nil)
	if got := itemIDs(list, "id"); len(got) != 1 {
		t.Fatalf("tenant A's operator lists %v", got)
	}
	_, list = w.must(200, "GET", "/v1/identity/revocations", w.admin, nil)
	if got := itemIDs(list, "id"); strings.Join(got, ",") != strings.Join([]string{rec["id"].(string), ser["id"].(string), kern["id"].(string), other["id"].(string)}, ",") {
		t.Fatalf("SUPER_ADMIN lists %v", got)
	}
	_, list = w.must(200, "GET", "/v1/identity/revocations?tenant="+w.b, w.admin, nil)
	if got := itemIDs(list, "id"); len(got) != 1 || got[0] != other["id"] {
		t.Fatalf("SUPER_ADMIN naming B lists %v", got)
	}
	w.must(404, "GET", "/v1/identity/revocations?tenant="+w.b, w.keys["ADMIN"], nil)
	w.must(403, "GET", "/v1/identity/revocations", w.keys["VIEWER"], nil)

	// Pages.
	var paged []string
	path := "/v1/identity/revocations?limit=1"
	for range 10 {
		_, page := w.must(200, "GET", path, w.admin, nil)
		paged = append(paged, itemIDs(page, "id")...)
		next, _ := page["next_cursor"].(string)
		if next == "" {
			break
		}
		path = "/v1/identity/revocations?limit=1&cursor=" + next
	}
	if len(paged) != 4 {
		t.Fatalf("paged through %v, want 4", paged)
	}
	_, bad := w.must(400, "GET", "/v1/identity/revocations?cursor=bogus", w.admin, nil)
	wantFields(t, bad, "query.cursor")

	// Audited in the ID's tenant's trail.
	var allowed int
	for _, r := range w.auditOf(w.keys["ADMIN"], identity.AuditActionRevoke) {
		if strings.HasPrefix(r, "allowed: spiffe id "+id) && strings.Contains(r, "laptop stolen") {
			allowed++
		}
	}
	if allowed != 1 {
		t.Fatalf("tenant A's audit trail: %v", w.auditOf(w.keys["ADMIN"], identity.AuditActionRevoke))
	}
}

func TestRevokeSVIDRefusals(t *testing.T) {
	w := newRevocationWorld(t, nil)
	admin := w.keys["ADMIN"]
	for _, tt := range []struct {
		name   string
		body   map[string]any
		fields []string
	}{
		{"both", map[string]any{"serial": "ab", "spiffe_id": agentSPIFFE(w.a, "agt_1")}, []string{"body.serial", "body.spiffe_id"}},
		{"neither", map[string]any{"reason": "x"}, []string{"body.serial", "body.spiffe_id"}},
		{"bad serial", map[string]any{"serial": "12:34"}, []string{"body.serial"}},
		{"zero serial", map[string]any{"serial": "000"}, []string{"body.serial"}},
		{"not a SPIFFE ID", map[string]any{"spiffe_id": "https://" + identityTD + "/tenant/" + w.a}, []string{"body.spiffe_id"}},
		{"foreign trust domain", map[string]any{"spiffe_id": "spiffe://evil.test/tenant/" + w.a + "/agent/agt_1"}, []string{"body.spiffe_id"}},
		{"control characters in the reason", map[string]any{"spiffe_id": agentSPIFFE(w.a, "agt_1"), "reason": "a\u0007b"}, []string{"body.reason"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, p := w.must(400, "POST", "/v1/identity/revocations", admin, tt.body)
			wantFields(t, p, tt.fields...)
		})
	}

	// A tenant's ADMIN: another tenant's ID, a kernel's ID, a serial → 403, each audited as a
	// denial in its own trail.
	for _, body := range []map[string]any{
		{"spiffe_id": agentSPIFFE(w.b, "agt_1")},
		{"spiffe_id": "spiffe://" + identityTD + "/kernel/node-1"},
		{"serial": "abcdef"},
	} {
		w.must(403, "POST", "/v1/identity/revocations", admin, body)
	}
	// Naming another tenant is 404, as for any resource of another tenant.
	w.must(404, "POST", "/v1/identity/revocations?tenant="+w.b, admin, map[string]any{"spiffe_id": agentSPIFFE(w.b, "agt_1")})
	// Below ADMIN the scope is missing.
	w.must(403, "POST", "/v1/identity/revocations", w.keys["OPERATOR"], map[string]any{"spiffe_id": agentSPIFFE(w.a, "agt_1")})

	var denied []string
	for _, r := range w.auditOf(admin, identity.AuditActionRevoke) {
		if strings.HasPrefix(r, "denied: ") {
			denied = append(denied, r)
		}
	}
	if len(denied) != 3 || !strings.Contains(denied[0], agentSPIFFE(w.b, "agt_1")) || !strings.Contains(denied[2], "serial abcdef") {
		t.Fatalf("denials in tenant A's trail: %q", denied)
	}
	if got := w.revoker.applied(); len(got) != 0 {
		t.Fatalf("refused revocations applied: %+v", got)
	}
	_, list := w.must(200, "GET", "/v1/identity/revocations", w.admin, nil)
	if got := itemIDs(list, "id"); len(got) != 0 {
		t.Fatalf("refused revocations stored: %v", got)
	}
}

// TestRevokeSVIDListenerFailure: a failure to apply on this replica's listener is logged, and the
// revocation (committed, read by the listener's poller) is still 201.
func TestRevokeSVIDListenerFailure(t *testing.T) {
	w := newRevocationWorld(t, nil)
	w.revoker.fail = errors.New("listener closed")
	_, rec := w.must(201, "POST", "/v1/identity/revocations", w.admin, map[string]any{"serial": "ab"})
	if !strings.Contains(w.logs.String(), "listener closed") || !strings.Contains(w.logs.String(), rec["id"].(string)) {
		t.Fatalf("the failure is not logged: %s", w.logs.String())
	}
	_, list := w.must(200, "GET", "/v1/identity/revocations", w.admin, nil)
	if got := itemIDs(list, "id"); len(got) != 1 {
		t.Fatalf("stored %v", got)
	}
}

func TestRevocationsWithoutAStoreOrAListener(t *testing.T) {
	w := newRevocationWorld(t, func(d *Deps) { d.Revocations = nil })
	w.must(503, "POST", "/v1/identity/revocations", w.admin, map[string]any{"serial": "ab"})
	w.must(503, "GET", "/v1/identity/revocations", w.admin, nil)

	// No listener (Revoker nil): stored all the same.
	w2 := newRevocationWorld(t, func(d *Deps) { d.Revoker = nil })
	w2.must(201, "POST", "/v1/identity/revocations", w2.admin, map[string]any{"serial": "ab"})
}
