package reqsig_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/apikey"
	"github.com/nops-kernel/nops/internal/audit"
	"github.com/nops-kernel/nops/internal/control"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/registry"
	"github.com/nops-kernel/nops/internal/reqsig"
	"github.com/nops-kernel/nops/internal/store/sqlite"
	"github.com/nops-kernel/nops/internal/tenant"
)

// newControl returns a Control over a fresh SQLite store with ten_a and agt_a, and its store.
func newControl(t *testing.T, withKeys bool) (*control.Control, *sqlite.Store) {
	t.Helper()
	s := openSQLite(t, "")
	seed(t, s)
	tenants, err := tenant.NewService(s, tenant.Config{})
	if err != nil {
		t.Fatal(err)
	}
	agents, err := registry.NewService(s, registry.Config{})
	if err != nil {
		t.Fatal(err)
	}
	pepper, err := apikey.PepperFromConfig("v1", "0123456789abcdef0123456789abcdef")
	if err != nil {
		t.Fatal(err)
	}
	peppers, err := apikey.NewPeppers(pepper)
	if err != nil {
		t.Fatal(err)
	}
	ak, err := apikey.NewService(s, peppers, time.Now, slog.New(slog.DiscardHandler), apikey.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := control.New(s, tenants, agents, ak, control.Options{})
	if withKeys {
		c.RequestKeys = newKeys(t, s, newClock(time.Now()), reqsig.KeysOptions{CacheTTL: time.Second})
	}
	return c, s
}

// auditOf returns the records of ten_a's tree.
func auditOf(t *testing.T, s *sqlite.Store) []audit.Record {
	t.Helper()
	entries, err := s.Records(context.Background(), audit.TreeFor("ten_a"), 0, 100, 100)
	if err != nil {
		t.Fatal(err)
	}
	var out []audit.Record
	for _, e := range entries {
		r, err := e.Record()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

// TestControlRequestKeysAudited: create, rotate and revoke each leave one allowed record in the
// key's tenant tree, none of which holds a secret; refusals change nothing and audit nothing.
func TestControlRequestKeysAudited(t *testing.T) {
	c, s := newControl(t, true)
	ctx := control.WithRequest(adminOf("ten_a"), control.Request{IP: "192.0.2.7", RequestID: "req_1"})

	// Refusals first.
	if _, _, err := c.CreateRequestKey(ctx, reqsig.CreateInput{Alg: "rsa"}); errs.CodeOf(err) != errs.Invalid {
		t.Fatalf("CreateRequestKey with a bad algorithm: %v", err)
	}
	if err := c.RevokeRequestKey(ctx, "rk_01jpaz8kq3n3c0r7f4d6t0x9zz"); errs.CodeOf(err) != errs.NotFound {
		t.Fatalf("RevokeRequestKey of an unknown key: %v", err)
	}
	if recs := auditOf(t, s); len(recs) != 0 {
		t.Fatalf("refusals audited: %+v", recs)
	}

	k, secret1, err := c.CreateRequestKey(ctx, reqsig.CreateInput{Name: "ci", Alg: reqsig.AlgHMACSHA256})
	if err != nil {
		t.Fatal(err)
	}
	// The cached lookup follows the rotation committed through control.
	before, err := c.RequestKeys.Lookup(context.Background(), k.ID)
	if err != nil {
		t.Fatal(err)
	}
	_, secret2, err := c.RotateRequestKey(ctx, k.ID, reqsig.RotateInput{Grace: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	after, err := c.RequestKeys.Lookup(context.Background(), k.ID)
	if err != nil || after.Key.Generation != before.Key.Generation+1 {
		t.Fatalf("lookup after rotation: generation %d, %v", after.Key.Generation, err)
	}
	if err := c.RevokeRequestKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	if m, err := c.RequestKeys.Lookup(context.Background(), k.ID); err != nil || m.Key.RevokedAt.IsZero() {
		t.Fatalf("lookup after revocation still live: %v", err)
	}

	recs := auditOf(t, s)
	wantActions := []string{control.ActionRequestKeyCreate, control.ActionRequestKeyRotate, control.ActionRequestKeyRevoke}
	if len(recs) != len(wantActions) {
		t.Fatalf("%d audit records, want %d: %+v", len(recs), len(wantActions), recs)
	}
	for i, r := range recs {
		if r.Action != wantActions[i] || r.Resource != "request-keys/"+k.ID || !r.Decision.Allowed ||
			r.Actor.Principal != "usr_ten_a" || r.Actor.IP != "192.0.2.7" || r.Actor.RequestID != "req_1" {
			t.Errorf("record %d = %+v", i, r)
		}
		for _, secret := range []string{secret1, secret2} {
			if strings.Contains(r.Decision.Reason, secret) || strings.Contains(r.Resource, secret) {
				t.Errorf("record %d holds a secret", i)
			}
		}
	}
}

func TestControlWithoutRequestKeys(t *testing.T) {
	c, _ := newControl(t, false)
	ctx := adminOf("ten_a")
	_, _, err := c.CreateRequestKey(ctx, reqsig.CreateInput{Alg: reqsig.AlgHMACSHA256})
	wantCode(t, "CreateRequestKey", err, errs.Unavailable)
	_, _, err = c.RotateRequestKey(ctx, "rk_x", reqsig.RotateInput{})
	wantCode(t, "RotateRequestKey", err, errs.Unavailable)
	wantCode(t, "RevokeRequestKey", c.RevokeRequestKey(ctx, "rk_x"), errs.Unavailable)
}
